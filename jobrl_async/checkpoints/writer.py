"""The checkpoint writer stage: training never waits for it, and no reader sees half its work.

Commit protocol, per checkpoint: files -> size check -> manifest -> read-back -> pointers ->
retention. Invariants:
  - a folder is complete only once its manifest is there, and a pointer moves only after that,
    so a reader (or a resume after `kill -9`) never sees a partial checkpoint;
  - a complete folder is never rewritten: the writer may only add files to a folder it wrote
    itself (a latest after its step's best), then replace the manifest; a new run meeting a
    complete folder of the same step writes beside it (`step-000123-1`);
  - the writer deletes only names it writes itself (`Folder.own_files`), the manifest first;
  - with a lease, nothing moves a pointer or deletes a folder once another run holds the URI.
"""

from __future__ import annotations

import asyncio
import functools
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import anyio.to_thread
from botocore.exceptions import BotoCoreError, ClientError

from ..config import Config
from ..errors import CheckpointError, StorageError
from ..ops.log import get_logger
from ..storage import Store, open_store
from .files import Staged, stage
from .formats import KINDS, MANIFEST, MAX_MANIFEST_BYTES, build_manifest, check_sizes, manifest_bytes, pointer_bytes, step_folder
from .pending import Job, PendingQueue, SaveRequest
from .readers import listed_sizes, read_pointer, settle_all
from .retention import Folder, folders_from_listing, folders_to_delete

if TYPE_CHECKING:
    from .lease import CheckpointLease

RETRY_BASE_S = 1.0
RETRY_MAX_S = 60.0
# What a checkpoint write may retry: the store or the local disk failing, never a bug of ours.
RETRYABLE = (StorageError, OSError, BotoCoreError, ClientError, aiohttp.ClientError, asyncio.TimeoutError)


@dataclass
class WriterStats:
    written: int = 0  # checkpoint folders committed (one folder may serve best and latest)
    failed: int = 0  # failed attempts (each is retried later, unless superseded or given up)
    abandoned: int = 0  # checkpoints given up after checkpoints.max_attempts
    superseded: int = 0  # pending checkpoints dropped for a newer one
    pending: int = 0  # waiting, not started
    failures_in_a_row: int = 0  # failed attempts since the last checkpoint written
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def retry_reason(exc: BaseException) -> str | None:
    """Why a write failed, when it is worth retrying (the store or the disk); None for a bug."""
    if isinstance(exc, StorageError):
        return str(exc)
    if isinstance(exc, (TimeoutError, ConnectionError)):  # OSErrors of the network, not of the disk
        return f"storage: {type(exc).__name__} (network)"
    if isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError):
        return f"local disk: {type(exc).__name__}: {exc.strerror or exc}"
    if isinstance(exc, RETRYABLE):  # raw botocore/aiohttp text can carry URLs: the type only
        return f"storage: {type(exc).__name__}"
    return None


def plan_files(staged: Staged, existing: dict | None) -> tuple[list[str], dict[str, dict]]:
    """(files to upload, the manifest's file table). A folder this writer already committed
    keeps its files (a pointer may target them): only files it lacks are added."""
    if existing is None:
        return sorted(staged.files), dict(staged.files)
    table = dict(existing["files"])
    new = sorted(name for name in staged.files if name not in table)
    table.update({name: staged.files[name] for name in new})
    return new, table


def _remove_all_but(root: Path, keep: set[Path]) -> None:
    for child in root.iterdir():
        if child not in keep:
            shutil.rmtree(child, ignore_errors=True)


class CheckpointWriter:
    """The checkpoint writer stage. `submit` (on the event loop) never waits for I/O; `run`
    writes one checkpoint at a time: serialised in a worker thread, its files uploaded
    concurrently (the store bounds concurrency and goes multipart for large files).

    A write that fails on storage (the store, the network, the local disk) is reported
    (`checkpoint_failed`) and retried with backoff, never moving a pointer; after
    `checkpoints.max_attempts` tries it is given up (`checkpoint_abandoned`), so one stuck
    checkpoint never blocks the ones behind it, and as many failures in a row are reported as
    persistent (`on_result`'s third argument: /healthz turns 503) until a write succeeds.
    Any other exception is a bug and ends `run()` with it. With a lease, `run()` ends with
    CheckpointLeaseLost once another run holds the URI.
    """

    def __init__(
        self,
        uri: str,
        cfg: Config,
        *,
        store: Store | None = None,  # tests inject a faulty store; default: open_store(uri)
        retry_base_s: float = RETRY_BASE_S,
        retry_max_s: float = RETRY_MAX_S,
        # (kind, ok, persistent failure or None): feeds the metrics and /healthz
        on_result: Callable[[str, bool, str | None], None] | None = None,
        lease: CheckpointLease | None = None,  # held by this run; released when run() ends
    ) -> None:
        self.uri = uri
        self._on_result = on_result or (lambda kind, ok, persistent=None: None)
        self.keep_latest = cfg.checkpoints.keep_latest
        self.max_attempts = cfg.checkpoints.max_attempts
        self.retry_base_s, self.retry_max_s = retry_base_s, retry_max_s
        self._store = store if store is not None else open_store(uri, cfg.storage)
        self._own_store = store is None
        self._lease = lease
        self._queue = PendingQueue(cfg.checkpoints.max_pending)
        self._committed: dict[str, dict] = {}  # folder -> manifest, for folders this writer wrote
        self._folder_of: dict[int, str] = {}  # step -> the folder this writer writes it to
        self._scratch: Path | None = None  # where checkpoints are serialised; one folder per job
        self._jobs_staged = 0
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._running = self._closing = False
        self._in_flight: Job | None = None
        self._scope: anyio.CancelScope | None = None
        self.stats = WriterStats()

    # -- the pipeline's side

    def submit(self, req: SaveRequest) -> None:
        """Queue a checkpoint; returns at once. Call it from the event loop's thread.

        The writer takes ownership of the tensors in `req` (adapter and learner state): they are
        serialised later, in a worker thread, while training goes on. So they must be private
        copies that nothing changes any more, taken when the checkpoint is meant to describe
        (the pipeline copies them on the device thread; `snapshot()` makes such copies). They
        are not copied again here.
        """
        if self._closing:  # a validation that finished during shutdown: too late to write
            get_logger("checkpoints").warning("checkpoint_dropped", kind=req.kind, step=req.step,
                                              reason="submitted after close()")
            return
        if req.kind not in KINDS:
            raise ValueError(f"unknown checkpoint kind {req.kind!r}")
        if req.kind == "latest" and req.learner_state is None:
            raise ValueError("a latest checkpoint needs the learner state (it is what a resume loads)")
        self._superseded(self._queue.push(Job.of(req)))
        self.stats.pending = len(self._queue)
        self._wake.set()

    async def run(self) -> None:
        """The stage: write queued checkpoints until `close()` (or cancellation)."""
        self._running = True
        watch = asyncio.create_task(self._watch_lease()) if self._lease is not None else None
        try:
            with anyio.CancelScope() as self._scope:
                while (job := await self._next_job()) is not None:
                    self._in_flight = job
                    await self._attempt(job)
                    self._in_flight = None
                    await self._sweep()
        finally:
            with anyio.CancelScope(shield=True):
                if watch is not None:
                    watch.cancel()
                    await asyncio.gather(watch, return_exceptions=True)
                if self._scratch is not None:
                    await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, self._scratch, ignore_errors=True))
                if self._lease is not None:
                    await self._lease.aclose()
                if self._own_store:
                    await self._store.aclose()
            self._done.set()

    async def close(self, timeout: float) -> bool:
        """Finish pending writes within `timeout` s, then stop `run()`. True if all were written."""
        self._closing = True
        self._wake.set()
        if not self._running:
            return len(self._queue) == 0
        with anyio.move_on_after(timeout):
            await self._done.wait()
        if not self._done.is_set():
            left = len(self._queue) + (self._in_flight is not None)
            get_logger("checkpoints").warning("checkpoint_close_timeout", timeout_s=timeout, unwritten=left)
            if self._scope is not None:
                self._scope.cancel()
            await self._done.wait()
            return False
        return len(self._queue) == 0 and self._in_flight is None

    # -- one checkpoint at a time

    async def _next_job(self) -> Job | None:
        while True:
            if self._lease is not None and self._lease.lost is not None:
                raise self._lease.lost  # another run writes here now: stop, write nothing more
            job, wait = self._queue.next_ready(time.monotonic())
            if job is not None:
                self.stats.pending = len(self._queue)
                return job
            if wait is None and self._closing:
                return None
            self._wake.clear()  # no await since next_ready: no submit can slip in between
            with anyio.move_on_after(math.inf if wait is None else wait):
                await self._wake.wait()

    async def _watch_lease(self) -> None:
        assert self._lease is not None
        await self._lease.lost_event.wait()
        self._wake.set()

    async def _attempt(self, job: Job) -> None:
        try:
            if job.staged is None:  # the job owns its folder before the thread writes into it
                job.staged = Staged(await self._new_scratch_folder(), {})
            if not job.staged.files:
                job.staged.files = await anyio.to_thread.run_sync(stage, job.request, job.staged.folder)
            await self._commit(job)
        except Exception as exc:
            reason = retry_reason(exc)
            if reason is None:  # a bug, or the lease lost: never retried
                raise
            self._failed(job, reason)
        else:
            self.stats.written += 1
            if self.stats.failures_in_a_row >= self.max_attempts:
                get_logger("checkpoints").info("checkpoint_writes_recovered", step=job.step,
                                               failures=self.stats.failures_in_a_row)
            self.stats.failures_in_a_row = 0

    async def _new_scratch_folder(self) -> Path:
        """A folder for one job's files, in a scratch folder made on first use (a failure to make
        it is a local disk failure like any other: retried)."""
        if self._scratch is None:
            self._scratch = Path(await anyio.to_thread.run_sync(functools.partial(tempfile.mkdtemp, prefix="jobrl-ckpt-")))
        self._jobs_staged += 1
        return self._scratch / f"job-{self._jobs_staged}"  # stage() creates it, in its thread

    async def _sweep(self) -> None:
        """Remove serialised files no job holds any more (written, superseded, merged, given up)."""
        if self._scratch is None:
            return
        held = {j.staged.folder for j in [*self._queue.jobs, self._in_flight] if j is not None and j.staged}
        await anyio.to_thread.run_sync(_remove_all_but, self._scratch, held)

    def _failed(self, job: Job, reason: str) -> None:
        job.attempts += 1
        self.stats.failed += 1
        self.stats.failures_in_a_row += 1
        self.stats.last_error = reason
        log = get_logger("checkpoints")
        persistent = None
        if self.stats.failures_in_a_row >= self.max_attempts:
            # no storage text here: it goes to /healthz, which names no bucket or path
            persistent = f"{self.stats.failures_in_a_row} failed in a row (see checkpoint_failed in the log)"
            if self.stats.failures_in_a_row == self.max_attempts:
                log.error("checkpoint_writes_failing", failures=self.stats.failures_in_a_row, reason=reason)
        for kind in sorted(job.kinds):
            self._on_result(kind, False, persistent)
        give_up = job.attempts >= self.max_attempts
        delay = min(self.retry_max_s, self.retry_base_s * 2 ** (job.attempts - 1))
        log.warning("checkpoint_failed", kind=",".join(sorted(job.kinds)), step=job.step, reason=reason,
                    attempt=job.attempts, retry_in_s=None if give_up else round(delay, 3))
        if give_up:
            self.stats.abandoned += 1
            log.error("checkpoint_abandoned", kind=",".join(sorted(job.kinds)), step=job.step,
                      attempts=job.attempts, reason=reason)
        else:
            job.not_before = time.monotonic() + delay
            self._superseded(self._queue.requeue(job))
        self.stats.pending = len(self._queue)

    def _superseded(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.stats.superseded += 1
            get_logger("checkpoints").info("checkpoint_superseded", step=job.step, kind=job.request.kind)

    # -- the commit protocol

    async def _commit(self, job: Job) -> None:
        assert job.staged is not None
        await self._check_lease()  # before anything here is deleted or overwritten
        folder = await self._folder_for(job.step)
        existing = self._committed.get(folder)
        uploads, table = plan_files(job.staged, existing)
        score, round_ = job.validation_score, job.validation_round
        if existing is not None and score is None:
            score, round_ = existing["validation_score"], existing.get("validation_round")
        if existing is None or uploads or score != existing["validation_score"]:
            await self._upload(folder, job.staged, uploads)
            manifest = build_manifest(job.step, score, job.request.trainer.config_digest, table, round_)
            await self._write_manifest(folder, manifest)
        await self._check_lease()  # the uploads took a while: still ours before a pointer moves
        await self._move_pointers(job, folder)
        await self._retain()

    async def _move_pointers(self, job: Job, folder: str) -> None:
        for kind in KINDS:
            if kind in job.kinds and kind not in job.pointers_done:
                await self._store.write_bytes(f"{kind}.json", pointer_bytes(folder, job.step, job.validation_score))
                job.pointers_done.add(kind)
                self._on_result(kind, True, None)
                get_logger("checkpoints").info(
                    "checkpoint_saved", kind=kind, uri=self._store.uri(folder), step=job.step
                )

    async def _check_lease(self) -> None:
        if self._lease is not None:
            await self._lease.check()

    async def _folder_for(self, step: int) -> str:
        """The folder for `step`: the one this writer already uses, else the first name with no
        complete checkpoint in it (our leftovers of an interrupted write are cleared first)."""
        if step in self._folder_of:
            return self._folder_of[step]
        found = folders_from_listing(await self._store.list(step_folder(step)))
        suffix = 0
        while (name := step_folder(step, suffix)) in found and found[name].complete:
            suffix += 1
        if name in found:
            await self._delete_own(found[name])
        self._folder_of[step] = name
        return name

    async def _delete_own(self, folder: Folder) -> None:
        """Delete the files of `folder` this writer could have written, the manifest first (so
        the folder is incomplete before it is partial); anything else there is left alone."""
        names = sorted(folder.own_files, key=lambda n: n != MANIFEST)
        for name in names:
            await self._store.delete(f"{folder.name}/{name}")

    async def _upload(self, folder: str, staged: Staged, names: list[str]) -> None:
        await settle_all([self._store.upload_file(f"{folder}/{n}", staged.folder / n) for n in names])

    async def _write_manifest(self, folder: str, manifest: dict) -> None:
        where = self._store.uri(folder)
        try:
            check_sizes(manifest, listed_sizes(await self._store.list(f"{folder}/")), where)
        except CheckpointError as exc:  # our own upload does not show as written: the store's fault
            raise StorageError(str(exc).removeprefix("checkpoint: ")) from None
        raw = manifest_bytes(manifest)
        key = f"{folder}/{MANIFEST}"
        await self._store.write_bytes(key, raw)
        if await self._store.read_bytes(key, max_bytes=MAX_MANIFEST_BYTES) != raw:
            raise StorageError(f"{where}: manifest.json read back different bytes than were written")
        self._committed[folder] = manifest

    async def _retain(self) -> None:
        """Delete folders retention no longer keeps; pointers are read from the store, so a
        best written by an earlier run is kept too. A storage failure here is reported, never
        fatal (the next checkpoint retries); only files this writer could have written go."""
        try:
            pointers = {kind: await read_pointer(self._store, kind) for kind in KINDS}
            folders = folders_from_listing(await self._store.list())
            best, latest = (p.path if p else None for p in (pointers["best"], pointers["latest"]))
            for name in folders_to_delete(folders, best, latest, self.keep_latest):
                await self._delete_own(folders[name])
                self._committed.pop(name, None)
                self._folder_of = {s: f for s, f in self._folder_of.items() if f != name}
        except (StorageError, CheckpointError) as exc:
            get_logger("checkpoints").warning("checkpoint_retention_failed", reason=str(exc))
