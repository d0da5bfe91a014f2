"""The local store: objects as files under a root folder.

Invariant: a reader never sees half a file. Every write goes to a temp file in the target's
folder (`TMP_PREFIX`, never listed), is fsynced, then `os.replace`d over the target; a failed
write removes its temp file. `write_if` is a compare-and-swap on one file, its tag the file's
sha256, under a lock file beside it (`LOCK_PREFIX`, never listed) that every process on this
host agrees on. Deleting a file prunes the folders it leaves empty, as an S3 prefix ends with
its last key. Blocking file work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import filelock

from ..errors import StorageError
from .interface import CHUNK, MiB, ObjectInfo, StorageConflict, check_key, check_prefix, over_limit, write_probe

TMP_PREFIX = ".jobrl-tmp-"  # local temp files; never listed
LOCK_PREFIX = ".jobrl-lock-"  # local lock files of write_if; never listed
LOCK_TIMEOUT_S = 30.0
MAX_TAGGED_BYTES = 16 * MiB  # what write_if reads back of the object it replaces


class LocalStore:
    """Objects as files under `root`."""

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
        return await asyncio.to_thread(read_file, self._path(key), max_bytes)

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


def local_error(path: Path, action: str, exc: OSError) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return StorageError(f"cannot {action} {path}: it does not exist")
    if isinstance(exc, IsADirectoryError):
        return StorageError(f"cannot {action} {path}: it is a folder, not a file")
    if isinstance(exc, PermissionError):
        return StorageError(f"cannot {action} {path}: permission denied")
    return StorageError(f"cannot {action} {path}: {exc.strerror or type(exc).__name__}")


def read_file(path: Path, max_bytes: int | None) -> bytes:
    """The file's bytes, at most `max_bytes` (blocking)."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if max_bytes is not None and size > max_bytes:
                raise StorageError(f"{path} is {size} bytes, over the {max_bytes}-byte limit")
            # read at most one byte past the bound, in case the file grew since fstat
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except OSError as exc:
        raise local_error(path, "read", exc) from None
    if max_bytes is not None and len(data) > max_bytes:
        raise over_limit(path, max_bytes)
    return data


class AtomicFile:
    """A temp file in the target's folder; `commit` fsyncs it and renames it over the target."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)
        except OSError as exc:
            raise local_error(path, "write", exc) from None
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def commit(self) -> None:
        try:
            with self.file:
                self.file.flush()
                os.fsync(self.file.fileno())
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self.discard()
            raise local_error(self.path, "write", exc) from None
        _fsync_dir(self.path.parent)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    out = AtomicFile(path)
    try:
        write(out.file)
    except BaseException as exc:
        out.discard()
        if isinstance(exc, OSError):
            raise local_error(path, "write", exc) from None
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
        raise local_error(src, "read", exc) from None
    with source:
        if max_bytes is None:
            _atomic_write(dst, lambda f: shutil.copyfileobj(source, f, CHUNK))
        else:
            _atomic_write(dst, lambda f: _copy_bounded(source, f, max_bytes, src))


def _copy_bounded(source: BinaryIO, out: BinaryIO, max_bytes: int, where: object) -> None:
    copied = 0
    while chunk := source.read(CHUNK):
        copied += len(chunk)
        if copied > max_bytes:
            raise over_limit(where, max_bytes)
        out.write(chunk)


def _tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_tagged(path: Path, max_bytes: int) -> tuple[bytes, str] | None:
    if not path.is_file():
        return None
    try:
        data = read_file(path, max_bytes)
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
        raise local_error(path, "write", exc) from None
    return _tag(data)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise local_error(path, "delete", exc) from None


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
