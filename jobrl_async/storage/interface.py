"""What every store is: the `Store` interface, its keys, and the URIs that name a store.

    parse_uri(uri) -> Location          "data.json", "file:///data", "s3://bucket/prefix"

A store's keys are relative posix paths ("step-000001/adapter_model.safetensors", "best.json").
Invariant: a key is never empty, absolute, or holds an empty, "." or ".." part (`check_key`,
called by every store before it touches a key), so no key reaches outside the store's root.
Pure, except `write_probe`, which only calls a store's own methods.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from ..errors import StorageError

MiB = 1024 * 1024
CHUNK = 1 * MiB  # what a bounded read or copy takes at a time
PROBE_PREFIX = ".jobrl-write-probe-"


class StorageConflict(StorageError):
    """A conditional write found the object changed (or there, or gone) since it was read."""


@dataclass(frozen=True)
class Location:
    """A parsed URI. `key` is the object key or prefix (s3) or the filesystem path (file)."""

    scheme: Literal["file", "s3"]
    bucket: str
    key: str


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's root
    size: int
    modified: datetime  # UTC


class Store(Protocol):
    async def __aenter__(self) -> "Store": ...
    async def __aexit__(self, *exc: object) -> None: ...
    def uri(self, key: str = "") -> str: ...
    async def read_bytes(self, key: str, max_bytes: int | None = None) -> bytes: ...
    async def write_bytes(self, key: str, data: bytes) -> None: ...
    async def read_tagged(self, key: str, max_bytes: int) -> tuple[bytes, str] | None: ...
    async def write_if(self, key: str, data: bytes, expected: str | None) -> str: ...
    async def upload_file(self, key: str, local_path: str | os.PathLike) -> None: ...
    async def download_file(self, key: str, local_path: str | os.PathLike, max_bytes: int | None = None) -> None: ...
    async def exists(self, key: str) -> bool: ...
    async def list(self, prefix: str = "") -> list[ObjectInfo]: ...
    async def delete(self, key: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> None: ...
    async def check_writable(self) -> None: ...
    async def aclose(self) -> None: ...


def parse_uri(uri: str | os.PathLike) -> Location:
    """A plain path, `file://PATH` (everything after `//` is the path) or `s3://bucket/prefix`."""
    text = os.fspath(uri)
    if not text.strip():
        raise StorageError("empty storage URI")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return Location("file", "", text)
    if scheme == "file":
        if not rest:
            raise StorageError(f"{text!r} names no path")
        return Location("file", "", rest)
    if scheme != "s3":
        raise StorageError(f"unsupported URI scheme '{scheme}://' in {text!r} (use a path, file:// or s3://)")
    bucket, _, key = rest.partition("/")
    if not 3 <= len(bucket) <= 63:
        raise StorageError(f"{text!r}: an S3 bucket name has 3 to 63 characters, got {bucket!r}")
    return Location("s3", bucket, key.strip("/"))


def check_key(key: str) -> str:
    """`key` if it is a clean relative posix path (no '', '.' or '..' parts), else StorageError."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise StorageError(f"invalid storage key {key!r} (want a relative path like 'a/b.json')")
    return key


def check_prefix(prefix: str) -> str:
    """A key prefix: "" (everything), a key, or a key with a trailing '/'."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def over_limit(where: object, max_bytes: int) -> StorageError:
    """The error of a read or copy that went past its bound."""
    return StorageError(f"{where} is over the {max_bytes}-byte limit")


async def write_probe(store: Store) -> None:
    """Preflight: write, read back and delete a small object, so a bad root fails at start."""
    key = PROBE_PREFIX + uuid.uuid4().hex
    payload = key.encode()
    await store.write_bytes(key, payload)
    try:
        if await store.read_bytes(key) != payload:
            raise StorageError(f"{store.uri(key)} read back different bytes than were written")
    finally:
        await store.delete(key)
