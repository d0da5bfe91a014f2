"""One async interface to objects under a URI prefix: local folders and S3 alike.

    parse_uri(uri) -> Location          "data.json", "file:///data", "s3://bucket/prefix"
    open_store(uri, cfg) -> Store       LocalStore or S3Store, rooted at that prefix
    read_uri(uri, cfg, max_bytes)       one object, size-bounded (the dataset)

A store's keys are relative posix paths ("step-000001/adapter_model.safetensors", "best.json").
Both stores behave the same: `list` is recursive and sorted, deleting a missing key is not an
error (as in S3), a missing object is a `StorageError` naming it. Local writes are atomic
(temp file in the same folder, fsync, `os.replace`), so a reader never sees half a file.

Reads take an optional `max_bytes` and never hold more than one chunk past it (the size a
store reports is not trusted). `read_tagged` / `write_if` are a compare-and-swap on one small
object (S3's conditional writes, a lock file locally): what the checkpoint lease is built on.

S3 goes through aioboto3 and honours the standard AWS environment (`AWS_ENDPOINT_URL_S3` /
`AWS_ENDPOINT_URL`, `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_PROFILE`, the credential chain).
Retries on throttling and 5xx are botocore's own ("standard" mode). Errors are built from the
error code, never from botocore's text, which can carry request URLs and signatures.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import aioboto3
import aiohttp
import filelock
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotocoreConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    NoCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from .config import StorageConfig
from .errors import StorageError

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 1024 * MiB  # read_uri's bound when the caller gives none
TMP_PREFIX = ".jobrl-tmp-"  # local temp files; never listed
LOCK_PREFIX = ".jobrl-lock-"  # local lock files of write_if; never listed
PROBE_PREFIX = ".jobrl-write-probe-"
LOCK_TIMEOUT_S = 30.0
_CHUNK = 1 * MiB
MAX_TAGGED_BYTES = 16 * MiB  # what write_if reads back of the object it replaces


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


# ---------------------------------------------------------------- URIs and keys (pure)


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


def _join(prefix: str, key: str) -> str:
    return f"{prefix}/{key}" if prefix and key else prefix or key


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


# ---------------------------------------------------------------- local folders


class LocalStore:
    """Objects as files under `root`. Blocking file work runs in a worker thread."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().absolute()

    async def __aenter__(self) -> "LocalStore":
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def uri(self, key: str = "") -> str:
        return str(self._path(key)) if key else str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def read_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        return await asyncio.to_thread(_read_file, self._path(key), max_bytes)

    async def write_bytes(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(_atomic_write, self._path(key), lambda f: f.write(data))

    async def read_tagged(self, key: str, max_bytes: int) -> tuple[bytes, str] | None:
        """The object's bytes and a tag that changes whenever they do (their sha256), or None."""
        return await asyncio.to_thread(_read_tagged, self._path(key), max_bytes)

    async def write_if(self, key: str, data: bytes, expected: str | None) -> str:
        """Write only if the object's tag is still `expected` (None: only if there is none);
        else StorageConflict. Processes on this host agree through a lock file beside it."""
        return await asyncio.to_thread(_write_if, self._path(key), data, expected)

    async def upload_file(self, key: str, local_path: str | os.PathLike) -> None:
        await asyncio.to_thread(_copy_file, Path(local_path), self._path(key))

    async def download_file(self, key: str, local_path: str | os.PathLike, max_bytes: int | None = None) -> None:
        await asyncio.to_thread(_copy_file, self._path(key), Path(local_path), max_bytes)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        return await asyncio.to_thread(_list_files, self.root, check_prefix(prefix))

    async def delete(self, key: str) -> None:
        """Delete the file, then the folders it leaves empty (an S3 prefix ends with its last key)."""
        await asyncio.to_thread(_unlink_and_prune, self._path(key), self.root)

    async def delete_prefix(self, prefix: str) -> None:
        if not check_prefix(prefix):
            raise StorageError(f"refusing to delete everything under {self.root} (empty prefix)")
        await asyncio.to_thread(_delete_tree_prefix, self.root, prefix)

    async def check_writable(self) -> None:
        await write_probe(self)


def _local_error(path: Path, action: str, exc: OSError) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return StorageError(f"cannot {action} {path}: it does not exist")
    if isinstance(exc, IsADirectoryError):
        return StorageError(f"cannot {action} {path}: it is a folder, not a file")
    if isinstance(exc, PermissionError):
        return StorageError(f"cannot {action} {path}: permission denied")
    return StorageError(f"cannot {action} {path}: {exc.strerror or type(exc).__name__}")


def _read_file(path: Path, max_bytes: int | None) -> bytes:
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if max_bytes is not None and size > max_bytes:
                raise StorageError(f"{path} is {size} bytes, over the {max_bytes}-byte limit")
            # read at most one byte past the bound, in case the file grew since fstat
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except OSError as exc:
        raise _local_error(path, "read", exc) from None
    if max_bytes is not None and len(data) > max_bytes:
        raise StorageError(f"{path} is over the {max_bytes}-byte limit")
    return data


class _AtomicFile:
    """A temp file in the target's folder; `commit` fsyncs it and renames it over the target."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)
        except OSError as exc:
            raise _local_error(path, "write", exc) from None
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def commit(self) -> None:
        try:
            with self.file:
                self.file.flush()
                os.fsync(self.file.fileno())
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self.discard()
            raise _local_error(self.path, "write", exc) from None
        _fsync_dir(self.path.parent)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    out = _AtomicFile(path)
    try:
        write(out.file)
    except BaseException as exc:
        out.discard()
        if isinstance(exc, OSError):
            raise _local_error(path, "write", exc) from None
        raise
    out.commit()


def _fsync_dir(folder: Path) -> None:
    # makes the rename itself durable; not every platform can open a folder
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _copy_file(src: Path, dst: Path, max_bytes: int | None = None) -> None:
    try:
        source = src.open("rb")
    except OSError as exc:
        raise _local_error(src, "read", exc) from None
    with source:
        if max_bytes is None:
            _atomic_write(dst, lambda f: shutil.copyfileobj(source, f, _CHUNK))
        else:
            _atomic_write(dst, lambda f: _copy_bounded(source, f, max_bytes, src))


def _copy_bounded(source: BinaryIO, out: BinaryIO, max_bytes: int, where: object) -> None:
    copied = 0
    while chunk := source.read(_CHUNK):
        copied += len(chunk)
        if copied > max_bytes:
            raise StorageError(f"{where} is over the {max_bytes}-byte limit")
        out.write(chunk)


def _tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_tagged(path: Path, max_bytes: int) -> tuple[bytes, str] | None:
    if not path.is_file():
        return None
    try:
        data = _read_file(path, max_bytes)
    except StorageError:
        if not path.exists():  # replaced between the two calls: as good as absent
            return None
        raise
    return data, _tag(data)


def _write_if(path: Path, data: bytes, expected: str | None) -> str:
    lock = path.with_name(LOCK_PREFIX + path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(lock, timeout=LOCK_TIMEOUT_S):
            current = _read_tagged(path, MAX_TAGGED_BYTES)
            if (current[1] if current else None) != expected:
                raise StorageConflict(f"{path} changed since it was read")
            _atomic_write(path, lambda f: f.write(data))
    except filelock.Timeout:
        raise StorageError(f"cannot write {path}: {lock} stayed locked for {LOCK_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise _local_error(path, "write", exc) from None
    return _tag(data)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise _local_error(path, "delete", exc) from None


def _unlink_and_prune(path: Path, root: Path) -> None:
    _unlink(path)
    folder = path.parent
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (or not ours to remove): the folders above are not empty either
            return
        folder = folder.parent


def _walk_files(root: Path, prefix: str) -> list[tuple[str, Path]]:
    """(key, path) of every file whose key starts with `prefix`, temp files left out."""
    # start at the deepest folder the prefix names, then filter by the string prefix (S3's rule)
    base = root / prefix.rpartition("/")[0] if "/" in prefix else root
    found: list[tuple[str, Path]] = []
    for folder, _dirs, files in os.walk(base):
        for name in files:
            if name.startswith((TMP_PREFIX, LOCK_PREFIX)):
                continue
            path = Path(folder, name)
            key = path.relative_to(root).as_posix()
            if key.startswith(prefix):
                found.append((key, path))
    return found


def _list_files(root: Path, prefix: str) -> list[ObjectInfo]:
    out: list[ObjectInfo] = []
    for key, path in _walk_files(root, prefix):
        try:
            st = path.stat()
        except FileNotFoundError:  # deleted while we walked
            continue
        modified = datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)
        out.append(ObjectInfo(key, st.st_size, modified))
    return sorted(out, key=lambda o: o.key)


def _delete_tree_prefix(root: Path, prefix: str) -> None:
    for _key, path in _walk_files(root, prefix):
        _unlink(path)
    # remove folders left empty whose whole subtree was under the prefix (S3 has no folders)
    base = root / prefix.rpartition("/")[0] if "/" in prefix else root
    for folder, _dirs, _files in os.walk(base, topdown=False):
        path = Path(folder)
        if path != root and (path.relative_to(root).as_posix() + "/").startswith(prefix):
            with contextlib.suppress(OSError):  # not empty (a temp file, a new write): keep it
                path.rmdir()


# ---------------------------------------------------------------- S3

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
# a conditional write lost: the object changed (412), or a concurrent write to it is under way (409)
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
# codes botocore's standard mode retries: when one reaches us, the attempts are spent
_RETRIED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
            "RequestTimeout", "InternalError", "ServiceUnavailable"}


class S3Store:
    """Objects under `s3://bucket/prefix`. One client, opened on first use, closed on exit."""

    def __init__(self, bucket: str, prefix: str = "", cfg: StorageConfig | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cfg = cfg or StorageConfig()
        self._limit = asyncio.Semaphore(self.cfg.max_concurrency)
        self._transfer = TransferConfig(
            multipart_threshold=self.cfg.multipart_threshold_mb * MiB,
            multipart_chunksize=self.cfg.multipart_chunk_mb * MiB,
            max_concurrency=self.cfg.max_concurrency,
            max_io_queue=self.cfg.max_concurrency,  # parts read ahead: bounds memory
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._opening = asyncio.Lock()
        self._endpoint = "the S3 endpoint"  # the real URL once the client is open

    async def __aenter__(self) -> "S3Store":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._client = None
        await self._stack.aclose()

    def uri(self, key: str = "") -> str:
        path = self._key(key) if key else self.prefix
        return f"s3://{self.bucket}/{path}" if path else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        return _join(self.prefix, check_key(key))

    async def _open(self) -> Any:
        async with self._opening:
            if self._client is None:
                session = aioboto3.Session(profile_name=self.cfg.profile or None)
                self._client = await self._stack.enter_async_context(
                    session.client("s3", region_name=_region(self.cfg), config=self._botocore_config())
                )
                self._endpoint = _safe_endpoint(self._client.meta.endpoint_url)
        return self._client

    def _botocore_config(self) -> BotocoreConfig:
        return BotocoreConfig(
            # botocore's "max_attempts" counts retries only; "total_max_attempts" counts them all
            retries={"mode": "standard", "total_max_attempts": self.cfg.max_attempts},
            max_pool_connections=max(10, self.cfg.max_concurrency),
        )

    @contextlib.asynccontextmanager
    async def _request(self, action: str, key: str) -> AsyncIterator[Any]:
        """The client, under the concurrency bound, with errors turned into StorageError."""
        uri = f"s3://{self.bucket}/{key}"
        async with self._limit:
            try:
                yield self._client or await self._open()
            except (BotoCoreError, ClientError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise s3_error(exc, action, self.bucket, uri, self._endpoint, self.cfg) from None

    async def read_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        full = self._key(key)
        async with self._request("read", full) as s3:
            resp = await s3.get_object(Bucket=self.bucket, Key=full)
            return await self._bounded_body(resp, key, max_bytes)

    async def _bounded_body(self, resp: dict, key: str, max_bytes: int | None) -> bytes:
        """The body, refused as soon as it is over `max_bytes`: whatever ContentLength says."""
        body = resp["Body"]
        async with body:  # `as` would give the raw aiohttp response, not botocore's checks
            size = resp.get("ContentLength", 0)
            if max_bytes is None:
                return await body.read()
            if size > max_bytes:
                raise StorageError(f"{self.uri(key)} is {size} bytes, over the {max_bytes}-byte limit")
            chunks, total = [], 0
            async for chunk in body.iter_chunks(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise StorageError(f"{self.uri(key)} is over the {max_bytes}-byte limit")
                chunks.append(chunk)
            return b"".join(chunks)

    async def write_bytes(self, key: str, data: bytes) -> None:
        full = self._key(key)
        async with self._request("write", full) as s3:
            # the managed transfer switches to multipart above the threshold
            await s3.upload_fileobj(io.BytesIO(data), self.bucket, full, Config=self._transfer)

    async def read_tagged(self, key: str, max_bytes: int) -> tuple[bytes, str] | None:
        """The object's bytes and its ETag, or None when there is none."""
        full = self._key(key)
        async with self._request("read", full) as s3:
            try:
                resp = await s3.get_object(Bucket=self.bucket, Key=full)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    return None
                raise
            return await self._bounded_body(resp, key, max_bytes), str(resp.get("ETag", ""))

    async def write_if(self, key: str, data: bytes, expected: str | None) -> str:
        """Write only if the ETag is still `expected` (None: only if there is no object), with
        S3's conditional writes (If-Match / If-None-Match); else StorageConflict. The new ETag."""
        full = self._key(key)
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        async with self._request("write", full) as s3:
            try:
                resp = await s3.put_object(Bucket=self.bucket, Key=full, Body=data, **condition)
            except ClientError as exc:
                if _code(exc) in _CONFLICT or _code(exc) in _NOT_FOUND:
                    raise StorageConflict(f"{self.uri(key)} changed since it was read") from None
                raise
        return str(resp.get("ETag", ""))

    async def upload_file(self, key: str, local_path: str | os.PathLike) -> None:
        full, path = self._key(key), Path(local_path)
        if not path.is_file():
            raise StorageError(f"cannot upload {path} to {self.uri(key)}: no such file")
        async with self._request("upload to", full) as s3:
            await s3.upload_file(str(path), self.bucket, full, Config=self._transfer)

    async def download_file(self, key: str, local_path: str | os.PathLike, max_bytes: int | None = None) -> None:
        full, path = self._key(key), Path(local_path)
        async with self._request("download", full) as s3:
            resp = await s3.get_object(Bucket=self.bucket, Key=full)
            # streamed into a temp file: a failed download never leaves a partial file behind
            out = await asyncio.to_thread(_AtomicFile, path)
            try:
                body, received = resp["Body"], 0
                async with body:
                    async for chunk in body.iter_chunks(_CHUNK):
                        received += len(chunk)
                        if max_bytes is not None and received > max_bytes:
                            raise StorageError(f"{self.uri(key)} is over the {max_bytes}-byte limit")
                        await asyncio.to_thread(out.file.write, chunk)
            except BaseException as exc:
                await asyncio.to_thread(out.discard)
                if isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError):
                    raise _local_error(path, "write", exc) from None  # the local disk, not S3
                raise
        await asyncio.to_thread(out.commit)

    async def exists(self, key: str) -> bool:
        full = self._key(key)
        async with self._request("check", full) as s3:
            try:
                await s3.head_object(Bucket=self.bucket, Key=full)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    return False
                raise
        return True

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        root = self.prefix + "/" if self.prefix else ""
        full = root + check_prefix(prefix)
        out: list[ObjectInfo] = []
        async with self._request("list", full) as s3:
            async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith("/"):  # a console's "folder" marker, not an object
                        continue
                    out.append(ObjectInfo(obj["Key"][len(root):], obj["Size"], obj["LastModified"]))
        return sorted(out, key=lambda o: o.key)

    async def delete(self, key: str) -> None:
        full = self._key(key)
        async with self._request("delete", full) as s3:
            await s3.delete_object(Bucket=self.bucket, Key=full)

    async def delete_prefix(self, prefix: str) -> None:
        if not check_prefix(prefix):
            raise StorageError(f"refusing to delete everything under {self.uri()} (empty prefix)")
        keys = [self._key(o.key) for o in await self.list(prefix)]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = keys[start:start + 1000]
            async with self._request("delete", batch[0]) as s3:
                resp = await s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            if failed := resp.get("Errors"):
                first = failed[0]
                raise StorageError(
                    f"cannot delete s3://{self.bucket}/{first.get('Key')}: {first.get('Code')}"
                    f" ({len(failed)} of {len(batch)} keys failed)"
                )

    async def check_writable(self) -> None:
        await write_probe(self)


def _region(cfg: StorageConfig) -> str | None:
    # botocore reads AWS_DEFAULT_REGION and the profile itself, but not AWS_REGION
    return cfg.region or os.environ.get("AWS_REGION") or None


def _safe_endpoint(url: str | None) -> str:
    """The endpoint without user info, path or query (nothing secret can ride along)."""
    if not url:
        return "S3"
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.hostname or "", "", "", "")) + (
        f":{parts.port}" if parts.port else ""
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def s3_error(
    exc: BaseException, action: str, bucket: str, uri: str, endpoint: str, cfg: StorageConfig
) -> StorageError:
    """One clear line from a botocore/aiohttp error, built from its code, never its text."""
    where = f"cannot {action} {uri}"
    if isinstance(exc, ClientError):
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        if code == "NoSuchBucket":
            return StorageError(f"{where}: bucket '{bucket}' does not exist")
        if code in _NOT_FOUND:
            return StorageError(f"{where}: it does not exist")
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return StorageError(f"{where}: access denied (check the credentials' permissions on '{bucket}')")
        if code == "InvalidAccessKeyId":
            return StorageError(f"{where}: the AWS access key id is not known to {endpoint}")
        if code == "SignatureDoesNotMatch":
            return StorageError(f"{where}: the AWS secret key does not match the access key id")
        if code in ("ExpiredToken", "TokenRefreshRequired", "InvalidToken"):
            return StorageError(f"{where}: the AWS session token is expired or invalid")
        if code in _RETRIED or str(status).startswith("5"):
            return StorageError(f"{where}: {code} (HTTP {status}) after {cfg.max_attempts} attempts")
        return StorageError(f"{where}: {code or 'error'} (HTTP {status})")
    if isinstance(exc, NoCredentialsError):
        hint = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        return StorageError(f"{where}: no AWS credentials found ({hint})")
    if isinstance(exc, ProfileNotFound):
        profile = cfg.profile or os.environ.get("AWS_PROFILE", "")
        return StorageError(f"{where}: AWS profile '{profile}' not found")
    if isinstance(exc, (ReadTimeoutError, asyncio.TimeoutError)):
        return StorageError(f"{where}: {endpoint} timed out after {cfg.max_attempts} attempts")
    if isinstance(exc, (BotoConnectionError, aiohttp.ClientConnectionError)):
        return StorageError(f"{where}: cannot reach {endpoint} after {cfg.max_attempts} attempts")
    return StorageError(f"{where}: {type(exc).__name__}")


# ---------------------------------------------------------------- entry points


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
    return await asyncio.to_thread(_read_file, path, max_bytes)
