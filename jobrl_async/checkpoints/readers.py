"""Reading checkpoints back: find the one to resume, load one, list them all.

Invariant: nothing read from a store is trusted before it is checked. A pointer or manifest is
read within a fixed cap and parsed field by field (formats.py); every file is downloaded within
the size its manifest gives (at most checkpoints.max_file_mb) and its sha256 checked against
the manifest before anything is deserialised; a folder without a manifest is incomplete and
never loaded. A checkpoint that fails its checks is one clear line, and resume falls back to
the previous complete resumable folder (except for a checkpoint of the first format, which is
refused: ObsoleteCheckpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ..config import Config
from ..errors import CheckpointError, StorageError
from ..ops.log import get_logger
from ..storage import ObjectInfo, Store, open_store
from .files import LoadedCheckpoint, file_entry, load_files
from .formats import (
    DEFAULT_MAX_FILE_BYTES,
    FOLDER_RE,
    KINDS,
    LEARNER_JSON,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    MAX_POINTER_BYTES,
    TIME_RE,
    Kind,
    MiB,
    ObsoleteCheckpoint,
    Pointer,
    check_sizes,
    folder_order,
    parse_manifest,
    parse_pointer,
)
from .retention import Folder, folders_from_listing


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    path: str  # the folder's name under the root
    uri: str
    kind: str  # latest (resumable) | best (weights only)
    validation_score: float | None
    size: int  # bytes, all files
    time: str  # ISO 8601 UTC, when it was written
    is_best: bool
    is_latest: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def preflight(uri: str, cfg: Config) -> None:
    """Fail before training if checkpoints cannot be written (bad credentials, no bucket)."""
    async with open_store(uri, cfg.storage) as store:
        await store.check_writable()


async def read_pointer(store: Store, kind: Kind) -> Pointer | None:
    """best.json / latest.json, or None when there is none. One that cannot be read (too large,
    a folder, no permission) is a CheckpointError, as a corrupt one is: callers fall back alike."""
    key = f"{kind}.json"
    if not await store.exists(key):
        return None
    try:
        raw = await store.read_bytes(key, max_bytes=MAX_POINTER_BYTES)
    except StorageError as exc:
        raise CheckpointError(f"{store.uri(key)} cannot be read ({str(exc).removeprefix('storage: ')})") from None
    return parse_pointer(raw, store.uri(key))


def file_cap(cfg: Config) -> int:
    """checkpoints.max_file_mb in bytes: no checkpoint file is read past it."""
    return cfg.checkpoints.max_file_mb * MiB


def listed_sizes(listing: list[ObjectInfo]) -> dict[str, int]:
    """name -> size of the files in a listing of one folder."""
    return {o.key.rpartition("/")[2]: o.size for o in listing}


async def fetch_verified(store: Store, folder: str, dest: Path, max_file: int = DEFAULT_MAX_FILE_BYTES) -> dict:
    """Download `folder`'s files into `dest` and check each one's sha256 against the manifest.
    Nothing is deserialised here, and no file is read past the size its manifest gives; the
    manifest is returned once every file verified."""
    where = store.uri(folder)
    if not await store.exists(f"{folder}/{MANIFEST}"):
        raise CheckpointError(f"{where} has no manifest.json: it is incomplete or not a checkpoint")
    manifest = parse_manifest(await store.read_bytes(f"{folder}/{MANIFEST}", MAX_MANIFEST_BYTES), where, max_file)
    check_sizes(manifest, listed_sizes(await store.list(f"{folder}/")), where)
    await anyio.to_thread.run_sync(functools.partial(dest.mkdir, parents=True, exist_ok=True))
    files = manifest["files"]
    await settle_all([store.download_file(f"{folder}/{n}", dest / n, max_bytes=files[n]["size"]) for n in files])
    for name, expected in files.items():
        actual = await anyio.to_thread.run_sync(file_entry, dest / name)
        if actual != {"sha256": expected["sha256"], "size": expected["size"]}:
            raise CheckpointError(
                f"{where}: {name} does not match its manifest (sha256 {actual['sha256'][:12]}..., "
                f"expected {expected['sha256'][:12]}...): the file is corrupt or was modified"
            )
    return manifest


async def settle_all(transfers: list[Any]) -> None:
    """Run transfers concurrently and wait for every one to settle, then raise the first error:
    no transfer is left writing after its caller gave up (plain `gather` would leave them)."""
    results = await asyncio.gather(*transfers, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def split_checkpoint_uri(uri: str) -> tuple[str, str | None]:
    """(root, step folder) for `.../step-000123`, else (uri, None)."""
    root, sep, last = uri.rstrip("/").rpartition("/")
    if not FOLDER_RE.match(last):
        return uri, None
    return (root or ("/" if sep else ".")), last


async def load_checkpoint(uri: str, cfg: Config, dest: Path) -> LoadedCheckpoint:
    """Download and verify a checkpoint, then load it. `uri` is a step folder or the root
    (then best.json's target, else latest.json's)."""
    root, folder = split_checkpoint_uri(uri)
    async with open_store(root, cfg.storage) as store:
        if folder is None:
            folder = await _pointed_folder(store)
        manifest = await fetch_verified(store, folder, dest, file_cap(cfg))
        where = store.uri(folder)
    return await anyio.to_thread.run_sync(load_files, dest, manifest, where)


async def _pointed_folder(store: Store) -> str:
    for kind in KINDS:
        pointer = await read_pointer(store, kind)
        if pointer is not None:
            return pointer.path
    raise CheckpointError(
        f"no checkpoint at {store.uri()}: neither best.json nor latest.json is there"
        " (name a step folder, e.g. .../step-000010)"
    )


async def find_latest(uri: str, cfg: Config) -> str | None:
    """The newest resumable checkpoint that verifies: latest.json's target, else (one clear
    line logged per bad one) the previous complete resumable folder. None: start fresh.
    A checkpoint of the first format is not skipped: it is an ObsoleteCheckpoint error."""
    log = get_logger("checkpoints")
    async with open_store(uri, cfg.storage) as store, scratch_dir("jobrl-verify-") as scratch:
        folders = folders_from_listing(await store.list())
        try:
            pointer = await read_pointer(store, "latest")
        except CheckpointError as exc:
            log.warning("checkpoint_invalid", uri=store.uri("latest.json"), reason=str(exc))
            pointer, ceiling = None, (math.inf, math.inf)
        else:
            if pointer is None:
                return None
            ceiling = folder_order(pointer.path)
        older = sorted((f.name for f in folders.values() if f.resumable and f.order < ceiling),
                       key=folder_order, reverse=True)
        for name in ([pointer.path] if pointer else []) + older:
            try:
                await fetch_verified(store, name, scratch / name, file_cap(cfg))
                return store.uri(name)
            except ObsoleteCheckpoint:
                raise
            except (CheckpointError, StorageError) as exc:
                log.warning("checkpoint_invalid", uri=store.uri(name), reason=str(exc),
                            action="trying the previous checkpoint")
    return None


@contextlib.asynccontextmanager
async def scratch_dir(prefix: str) -> AsyncIterator[Path]:
    """A temporary folder made and removed in a worker thread (rmtree can take a while)."""
    path = Path(await anyio.to_thread.run_sync(functools.partial(tempfile.mkdtemp, prefix=prefix)))
    try:
        yield path
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, path, ignore_errors=True))


async def list_checkpoints(uri: str, cfg: Config) -> list[CheckpointInfo]:
    """The complete checkpoints under `uri`, oldest first. A folder without a manifest is not
    listed; one whose manifest does not parse or whose files are missing or of another size is
    reported and not listed (sha256 is checked when a checkpoint is loaded)."""
    async with open_store(uri, cfg.storage) as store:
        folders = folders_from_listing(await store.list())
        pointers: dict[str, Pointer | None] = {}
        for kind in KINDS:
            try:
                pointers[kind] = await read_pointer(store, kind)
            except CheckpointError as exc:
                get_logger("checkpoints").warning("checkpoint_invalid", uri=store.uri(f"{kind}.json"), reason=str(exc))
                pointers[kind] = None
        limit = file_cap(cfg)
        found = await asyncio.gather(*(_describe(store, f, pointers, limit) for f in folders.values() if f.complete))
    return [info for info in found if info is not None]


async def _describe(store: Store, folder: Folder, pointers: dict[str, Pointer | None],
                    max_file: int) -> CheckpointInfo | None:
    where = store.uri(folder.name)
    try:
        manifest = parse_manifest(await store.read_bytes(f"{folder.name}/{MANIFEST}", MAX_MANIFEST_BYTES), where, max_file)
        check_sizes(manifest, folder.files, where)
    except (CheckpointError, StorageError) as exc:
        get_logger("checkpoints").warning("checkpoint_invalid", uri=where, reason=str(exc))
        return None
    best, latest = pointers["best"], pointers["latest"]
    is_best = best is not None and best.path == folder.name
    score = manifest["validation_score"]
    if score is None and is_best:
        score = best.validation_score
    written = manifest.get("time")
    return CheckpointInfo(
        # kind and time are printed: taken from the files and the manifest only once they check out
        step=manifest["step"], path=folder.name, uri=where, kind="latest" if LEARNER_JSON in manifest["files"] else "best",
        validation_score=score, size=sum(folder.files.values()),
        time=written if isinstance(written, str) and TIME_RE.match(written) else "",
        is_best=is_best, is_latest=latest is not None and latest.path == folder.name,
    )
