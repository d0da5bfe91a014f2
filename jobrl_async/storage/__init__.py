"""One async interface to objects under a URI prefix: local folders and S3 alike.

    open_store(uri, cfg) -> Store       LocalStore or S3Store, rooted at that prefix
    read_uri(uri, cfg, max_bytes)       one object, size-bounded (the dataset)

    interface.py   the Store interface, keys, parse_uri, StorageConflict
    local.py       LocalStore: atomic writes, a lock file for write_if
    s3.py          S3Store: aioboto3, conditional writes, errors from codes only

Both stores behave the same: `list` is recursive and sorted, deleting a missing key is not an
error (as in S3), a missing object is a `StorageError` naming it. Reads take an optional
`max_bytes` and never hold more than one chunk past it (the size a store reports is not
trusted). `read_tagged` / `write_if` are a compare-and-swap on one small object: what the
checkpoint lease is built on.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from ..config import StorageConfig
from ..errors import StorageError
from .interface import Location, MiB, ObjectInfo, StorageConflict, Store, parse_uri
from .local import TMP_PREFIX, LocalStore, read_file
from .s3 import S3Store, s3_error

__all__ = [
    "TMP_PREFIX", "LocalStore", "Location", "ObjectInfo", "S3Store", "StorageConflict", "Store",
    "open_store", "parse_uri", "read_uri", "s3_error",
]

DEFAULT_MAX_BYTES = 1024 * MiB  # read_uri's bound when the caller gives none


def open_store(uri: str | os.PathLike, cfg: StorageConfig | None = None) -> Store:
    """A store rooted at `uri` (a folder path, file:// or s3://bucket/prefix)."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        return S3Store(loc.bucket, loc.key, cfg)
    return LocalStore(loc.key)


async def read_uri(
    uri: str | os.PathLike, cfg: StorageConfig | None = None, max_bytes: int | None = DEFAULT_MAX_BYTES
) -> bytes:
    """The bytes of one object (a path, file:// or s3://bucket/key), at most `max_bytes`."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        if not loc.key:
            raise StorageError(f"{os.fspath(uri)!r} names a bucket, not an object")
        async with S3Store(loc.bucket, "", cfg) as store:
            return await store.read_bytes(loc.key, max_bytes=max_bytes)
    path = Path(loc.key).expanduser()
    return await asyncio.to_thread(read_file, path, max_bytes)
