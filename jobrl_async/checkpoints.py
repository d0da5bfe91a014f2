"""Checkpoints: a writer stage that never blocks training, and readers that trust nothing.

Layout under the checkpoints URI (a path, file:// or s3://):

    step-000123/adapter_model.safetensors   LoRA weights, peft naming (PeftModel.from_pretrained)
    step-000123/adapter_config.json         peft LoraConfig
    step-000123/learner_state.pt            optimizer + scheduler (resumable checkpoints only)
    step-000123/trainer_state.json          step, epoch, position, policy version, best score, RNG
    step-000123/manifest.json               written LAST: sha256 and size of every file above
    best.json, latest.json                  pointers: {"step", "path", "validation_score", "time"}

Commit protocol, per checkpoint: files -> size check -> manifest -> read-back -> pointers ->
retention. A folder is complete only once its manifest is there, and a pointer moves only after
that, so a reader (or a resume after `kill -9`) never sees a partial checkpoint. A complete
folder is never rewritten: the writer may only add files to a folder it wrote itself (a latest
after its step's best), then replace the manifest; a new run meeting a complete folder of the
same step writes beside it (`step-000123-1`). Readers verify every file's sha256 against the
manifest before anything is deserialised (safetensors; `torch.load(weights_only=True)`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread
import orjson

from . import __version__
from .config import Config
from .errors import CheckpointError, StorageError
from .log import get_logger
from .storage import ObjectInfo, Store, open_store

if TYPE_CHECKING:  # torch is imported lazily: `checkpoints list` never pays for it
    import torch

Kind = Literal["best", "latest"]
KINDS: tuple[Kind, ...] = ("best", "latest")

ADAPTER = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LEARNER_STATE = "learner_state.pt"
TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"
REQUIRED_FILES = (ADAPTER, ADAPTER_CONFIG, TRAINER_STATE)
ALLOWED_FILES = frozenset((*REQUIRED_FILES, LEARNER_STATE))

# Read-back bounds: everything read from the store is untrusted until verified.
MAX_POINTER_BYTES = 64 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_JSON_FILE_BYTES = 16 * 1024 * 1024  # adapter_config.json, trainer_state.json
MAX_FILE_BYTES = 64 * 1024**3  # a manifest entry claiming more is not ours

FOLDER_RE = re.compile(r"^step-(\d{6,12})(?:-(\d{1,6}))?$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
RETRY_BASE_S = 1.0
RETRY_MAX_S = 60.0


# ---------------------------------------------------------------- trainer state and RNG


@dataclass
class TrainerState:
    """Where training stands; JSON-serialisable (trainer_state.json)."""

    step: int
    epoch: int
    position: int  # next batch index within the epoch
    policy_version: int
    best_score: float | None
    config_digest: str
    rng: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "trainer state") -> TrainerState:
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: expected a JSON object")
        for name in ("step", "epoch", "position", "policy_version"):
            value = data.get(name)
            if not is_count(value):
                raise CheckpointError(f"{where}: '{name}' must be an integer >= 0, got {value!r}")
        best = data.get("best_score")
        if best is not None and not _is_finite_number(best):
            raise CheckpointError(f"{where}: 'best_score' must be a number or null, got {best!r}")
        digest, rng = data.get("config_digest"), data.get("rng", {})
        if not isinstance(digest, str) or len(digest) > 128:
            raise CheckpointError(f"{where}: 'config_digest' must be a short string")
        if not isinstance(rng, dict):
            raise CheckpointError(f"{where}: 'rng' must be an object")
        return cls(data["step"], data["epoch"], data["position"], data["policy_version"],
                   None if best is None else float(best), digest, rng)


def is_count(value: Any) -> bool:
    """An integer >= 0 (JSON's true/false are not counts)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise CheckpointError(f"RNG state: '{what}' must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise CheckpointError(f"RNG state: '{what}' is not valid base64") from None


def capture_rng() -> dict[str, Any]:
    """The RNG states of python `random`, numpy's global generator, torch CPU (and CUDA)."""
    import numpy as np
    import torch

    version, state, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    rng: dict[str, Any] = {
        "python": {"version": version, "state": list(state), "gauss": gauss},
        "numpy": {"kind": np_kind, "keys": _b64(np.asarray(np_keys, dtype="<u4").tobytes()),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": _b64(torch.get_rng_state().numpy().tobytes()),
    }
    if torch.cuda.is_available():
        rng["cuda"] = [_b64(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()]
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    """Set the RNG states `capture_rng` returned; a malformed state is a CheckpointError."""
    import numpy as np
    import torch

    try:
        py = rng["python"]
        random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
        npy = rng["numpy"]
        keys = np.frombuffer(_unb64(npy["keys"], "numpy.keys"), dtype="<u4")
        np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
        torch.set_rng_state(_byte_tensor(rng["torch"], "torch"))
        cuda = rng.get("cuda")
        if cuda and torch.cuda.is_available():
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all([_byte_tensor(s, "cuda") for s in cuda])
            else:
                get_logger("checkpoints").warning(
                    "rng_cuda_skipped", saved_devices=len(cuda), devices=torch.cuda.device_count()
                )
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"RNG state is malformed ({type(exc).__name__}: {exc})") from None


def _byte_tensor(text: Any, what: str) -> torch.Tensor:
    import torch

    return torch.frombuffer(bytearray(_unb64(text, what)), dtype=torch.uint8)


# ---------------------------------------------------------------- requests and the queue policy (pure)


@dataclass
class SaveRequest:
    kind: Kind
    step: int
    validation_score: float | None
    adapter: dict[str, torch.Tensor]  # CPU LoRA weights, get_peft_model_state_dict naming
    adapter_config: dict  # peft LoraConfig.to_dict(), base_model_name_or_path = the model id
    learner_state: dict | None  # optimizer + scheduler; None for a weights-only best
    trainer: TrainerState
    # a best: the step whose validation round sampled these weights; `eval` redraws that round
    validation_round: int | None = None


def snapshot(value: Any) -> Any:
    """A private CPU copy of every tensor in a nest of dicts, lists and tuples."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(v) for v in value)
    return value  # numbers, strings, None: immutable


@dataclass
class Job:
    """One checkpoint folder to write, and the pointers to move to it once written."""

    step: int
    kinds: set[str]
    request: SaveRequest  # the request whose files are written (a latest's, when merged)
    validation_score: float | None
    validation_round: int | None = None
    attempts: int = 0
    not_before: float = 0.0  # monotonic time before which a failed job is not retried
    staged: Staged | None = None  # serialised files, kept across retries
    pointers_done: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, req: SaveRequest) -> Job:
        return cls(req.step, {req.kind}, req, req.validation_score, req.validation_round)

    @property
    def latest_only(self) -> bool:
        return self.kinds == {"latest"}

    def absorb(self, other: Job) -> None:
        """`other` is for the same step: one folder serves both kinds. The files written are
        the ones carrying the learner state (a latest's), so the folder is resumable."""
        self.kinds |= other.kinds
        self.pointers_done |= other.pointers_done
        self.not_before = max(self.not_before, other.not_before)  # a retry keeps its backoff
        self.attempts = max(self.attempts, other.attempts)
        if other.validation_score is not None:
            self.validation_score = other.validation_score
            self.validation_round = other.validation_round
        keep_other = other.request.learner_state is not None and self.request.learner_state is None
        dropped = self.staged if keep_other else other.staged
        if dropped is not None:
            dropped.discard()
        if keep_other:
            self.request, self.staged = other.request, other.staged


class PendingQueue:
    """Checkpoints waiting to be written, oldest first. Pure policy, no I/O.

    Invariants: len(jobs) <= capacity; at most one pending job has kind `best`; at most one job
    per step. Events:
      push(job)     a newer best supersedes an older pending best; a job for a pending step merges
                    into it; when full, the oldest latest-only job is superseded (a best is never
                    dropped for a latest: with capacity 1 and a best pending, the new latest is).
      requeue(job)  a failed write goes back to the front, under the same rules.
      next_ready    the front job once its retry time has come (FIFO keeps pointers in order).
    Each event returns the jobs it superseded.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.jobs: list[Job] = []

    def __len__(self) -> int:
        return len(self.jobs)

    def push(self, job: Job) -> list[Job]:
        return self._insert(job, front=False)

    def requeue(self, job: Job) -> list[Job]:
        return self._insert(job, front=True)

    def next_ready(self, now: float) -> tuple[Job | None, float | None]:
        """(the front job, None) if it may start now, else (None, seconds to wait or None)."""
        if not self.jobs:
            return None, None
        front = self.jobs[0]
        if front.not_before <= now:
            return self.jobs.pop(0), None
        return None, front.not_before - now

    def _insert(self, job: Job, *, front: bool) -> list[Job]:
        same = next((j for j in self.jobs if j.step == job.step), None)
        if same is not None:
            same.absorb(job)
            if front:  # a retried job keeps its place at the head of the line
                self.jobs.remove(same)
                self.jobs.insert(0, same)
            return []
        superseded: list[Job] = []
        pending_best = next((j for j in self.jobs if "best" in j.kinds), None)
        if "best" in job.kinds and pending_best is not None:
            # pending jobs are newer than a retried one, and older than a pushed one
            older = job if front else pending_best
            older.kinds.discard("best")
            if not older.kinds:
                superseded.append(older)
                if older is job:
                    return superseded
                self.jobs.remove(older)
        if front:
            self.jobs.insert(0, job)
        else:
            self.jobs.append(job)
        while len(self.jobs) > self.capacity:
            # the oldest latest-only job gives way; a best never does (at most one is pending)
            victim = next((j for j in self.jobs if j.latest_only), job)
            self.jobs.remove(victim)
            superseded.append(victim)
        return superseded


# ---------------------------------------------------------------- files, manifests, pointers


@dataclass
class Staged:
    """A checkpoint's files, serialised into a local temp folder, with their sha256 and size."""

    folder: Path
    files: dict[str, dict[str, Any]]  # name -> {"sha256", "size"}

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def stage(req: SaveRequest, folder: Path) -> dict[str, dict[str, Any]]:
    """Serialise `req` into `folder`; the files' sha256 and size (blocking: a worker thread)."""
    import torch
    from safetensors.torch import save_file

    tensors = {name: t.detach().to("cpu").contiguous() for name, t in req.adapter.items()}
    save_file(tensors, folder / ADAPTER, metadata={"format": "pt"})  # what peft writes
    (folder / ADAPTER_CONFIG).write_bytes(adapter_config_json(req.adapter_config))
    (folder / TRAINER_STATE).write_bytes(orjson.dumps(req.trainer.to_dict(), option=orjson.OPT_INDENT_2))
    if req.learner_state is not None:
        torch.save(req.learner_state, folder / LEARNER_STATE)
    return {p.name: file_entry(p) for p in sorted(folder.iterdir())}


def adapter_config_json(config: dict) -> bytes:
    """adapter_config.json as peft writes it (sets become sorted lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (set, frozenset)):
            return sorted(value)
        raise TypeError(f"adapter config value of type {type(value).__name__} is not JSON")

    return json.dumps(config, default=plain, indent=2, sort_keys=True).encode()


def file_entry(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"sha256": digest, "size": path.stat().st_size}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_manifest(step: int, score: float | None, config_digest: str, files: dict[str, dict],
                   validation_round: int | None = None) -> dict:
    return {
        "format": 1,
        "step": step,
        # "latest" = resumable (carries the learner state); a weights-only best is "best"
        "kind": "latest" if LEARNER_STATE in files else "best",
        "validation_score": score,
        "validation_round": validation_round,
        "time": utc_now(),
        "package_version": __version__,
        "config_digest": config_digest,
        "files": dict(sorted(files.items())),
    }


def manifest_bytes(manifest: dict) -> bytes:
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def json_object(raw: bytes, where: str) -> dict:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CheckpointError(f"{where} is not valid JSON") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{where} is not a JSON object")
    return value


def parse_manifest(raw: bytes, where: str) -> dict:
    """A manifest read back, checked field by field (it is untrusted until then)."""
    m = json_object(raw, f"{where}: manifest.json")
    step, score, files = m.get("step"), m.get("validation_score"), m.get("files")
    if not is_count(step):
        raise CheckpointError(f"{where}: manifest 'step' must be an integer >= 0, got {step!r}")
    if score is not None and not _is_finite_number(score):
        raise CheckpointError(f"{where}: manifest 'validation_score' must be a number or null")
    round_ = m.get("validation_round")
    if round_ is not None and not is_count(round_):
        raise CheckpointError(f"{where}: manifest 'validation_round' must be an integer >= 0 or null")
    if not isinstance(files, dict):
        raise CheckpointError(f"{where}: manifest 'files' must be an object")
    for name in REQUIRED_FILES:
        if name not in files:
            raise CheckpointError(f"{where}: manifest lists no {name}")
    for name, entry in files.items():
        _check_entry(name, entry, where)
    return m


def _check_entry(name: str, entry: Any, where: str) -> None:
    if name not in ALLOWED_FILES:  # also keeps names like "../x" out of the download folder
        raise CheckpointError(f"{where}: manifest lists an unexpected file {name!r}")
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise CheckpointError(f"{where}: manifest entry for {name} has no sha256")
    if not SHA256_RE.match(entry["sha256"]):
        raise CheckpointError(f"{where}: manifest sha256 of {name} is not 64 hex digits")
    size = entry.get("size")
    limit = MAX_JSON_FILE_BYTES if name.endswith(".json") else MAX_FILE_BYTES
    if not is_count(size) or size > limit:
        raise CheckpointError(f"{where}: manifest size of {name} must be 0..{limit} bytes, got {size!r}")


def check_sizes(manifest: dict, sizes: dict[str, int], where: str) -> None:
    """Every file the manifest lists is there with its size (the cheap check, before sha256)."""
    for name, entry in manifest["files"].items():
        if name not in sizes:
            raise CheckpointError(f"{where}: {name} is missing (the manifest lists it)")
        if sizes[name] != entry["size"]:
            raise CheckpointError(
                f"{where}: {name} is {sizes[name]} bytes, the manifest says {entry['size']}"
            )


@dataclass(frozen=True)
class Pointer:
    step: int
    path: str  # a step folder name, never a path outside the checkpoints root
    validation_score: float | None
    time: str


def pointer_bytes(folder: str, step: int, score: float | None) -> bytes:
    return orjson.dumps({"step": step, "path": folder, "validation_score": score, "time": utc_now()})


def parse_pointer(raw: bytes, where: str) -> Pointer:
    p = json_object(raw, where)
    path, step, score = p.get("path"), p.get("step"), p.get("validation_score")
    if not isinstance(path, str) or not FOLDER_RE.match(path):
        raise CheckpointError(f"{where}: 'path' must name a step folder like 'step-000123', got {path!r}")
    if not is_count(step) or step != folder_order(path)[0]:
        raise CheckpointError(f"{where}: 'step' {step!r} does not match the folder {path}")
    if score is not None and not _is_finite_number(score):
        raise CheckpointError(f"{where}: 'validation_score' must be a number or null")
    return Pointer(step, path, None if score is None else float(score), str(p.get("time", "")))


# ---------------------------------------------------------------- folders and retention (pure)


def step_folder(step: int, suffix: int = 0) -> str:
    """`step-000123`, or `step-000123-1` beside a complete folder of the same step."""
    return f"step-{step:06d}" + (f"-{suffix}" if suffix else "")


def folder_order(name: str) -> tuple[int, int]:
    m = FOLDER_RE.match(name)
    if m is None:
        raise ValueError(f"not a step folder: {name!r}")
    return int(m.group(1)), int(m.group(2) or 0)


@dataclass(frozen=True)
class Folder:
    name: str
    files: dict[str, int]  # direct children: name -> size

    @property
    def order(self) -> tuple[int, int]:
        return folder_order(self.name)

    @property
    def complete(self) -> bool:
        return MANIFEST in self.files

    @property
    def resumable(self) -> bool:
        return self.complete and LEARNER_STATE in self.files


def folders_from_listing(objects: Iterable[ObjectInfo]) -> dict[str, Folder]:
    """The step folders in a recursive listing of the checkpoints root (other keys ignored)."""
    files: dict[str, dict[str, int]] = {}
    for obj in objects:
        parts = obj.key.split("/")
        if len(parts) == 2 and FOLDER_RE.match(parts[0]):
            files.setdefault(parts[0], {})[parts[1]] = obj.size
    return {name: Folder(name, f) for name, f in sorted(files.items(), key=lambda kv: folder_order(kv[0]))}


def folders_to_delete(
    folders: dict[str, Folder], best: str | None, latest: str | None, keep_latest: int
) -> list[str]:
    """Retention: keep what `best` and `latest` point at and the last `keep_latest` resumable
    folders up to the newer pointer; delete every other folder older than that pointer.
    Folders newer than both pointers are never touched (a write may be on its way there)."""
    pointed = [folders[n] for n in (best, latest) if n is not None and n in folders]
    if not pointed:
        return []
    boundary = max(f.order for f in pointed)
    resumable = sorted((f for f in folders.values() if f.resumable and f.order <= boundary),
                       key=lambda f: f.order, reverse=True)
    keep = {best, latest} | {f.name for f in resumable[:keep_latest]}
    return [f.name for f in folders.values() if f.order < boundary and f.name not in keep]


def plan_files(staged: Staged, existing: dict | None) -> tuple[list[str], dict[str, dict]]:
    """(files to upload, the manifest's file table). A folder this writer already committed
    keeps its files (a pointer may target them): only files it lacks are added."""
    if existing is None:
        return sorted(staged.files), dict(staged.files)
    table = dict(existing["files"])
    new = sorted(name for name in staged.files if name not in table)
    table.update({name: staged.files[name] for name in new})
    return new, table


async def settle_all(transfers: list[Any]) -> None:
    """Run transfers concurrently and wait for every one to settle, then raise the first error:
    no transfer is left writing after its caller gave up (plain `gather` would leave them)."""
    results = await asyncio.gather(*transfers, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


# ---------------------------------------------------------------- the writer stage


@dataclass
class WriterStats:
    written: int = 0  # checkpoint folders committed (one folder may serve best and latest)
    failed: int = 0  # failed attempts (each is retried later, unless superseded)
    superseded: int = 0  # pending checkpoints dropped for a newer one
    pending: int = 0  # waiting, not started
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CheckpointWriter:
    """The checkpoint writer stage. `submit` (on the event loop) never waits for I/O; `run`
    writes one checkpoint at a time: serialised in a worker thread, its files uploaded
    concurrently (the store bounds concurrency and goes multipart for large files). A failed
    write is reported (`checkpoint_failed`) and retried with backoff, never moving a pointer.
    """

    def __init__(
        self,
        uri: str,
        cfg: Config,
        *,
        store: Store | None = None,  # tests inject a faulty store; default: open_store(uri)
        retry_base_s: float = RETRY_BASE_S,
        retry_max_s: float = RETRY_MAX_S,
        on_result: Callable[[str, bool], None] | None = None,  # (kind, ok): feeds the metrics
    ) -> None:
        self.uri = uri
        self._on_result = on_result or (lambda kind, ok: None)
        self.keep_latest = cfg.checkpoints.keep_latest
        self.retry_base_s, self.retry_max_s = retry_base_s, retry_max_s
        self._store = store if store is not None else open_store(uri, cfg.storage)
        self._own_store = store is None
        self._queue = PendingQueue(cfg.checkpoints.max_pending)
        self._committed: dict[str, dict] = {}  # folder -> manifest, for folders this writer wrote
        self._folder_of: dict[int, str] = {}  # step -> the folder this writer writes it to
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._running = self._closing = False
        self._in_flight: Job | None = None
        self._scope: anyio.CancelScope | None = None
        self.stats = WriterStats()

    # -- the pipeline's side

    def submit(self, req: SaveRequest) -> None:
        """Queue a checkpoint; returns at once. Call it from the event loop's thread."""
        if self._closing:  # a validation that finished during shutdown: too late to write
            get_logger("checkpoints").warning("checkpoint_dropped", kind=req.kind, step=req.step,
                                              reason="submitted after close()")
            return
        if req.kind not in KINDS:
            raise ValueError(f"unknown checkpoint kind {req.kind!r}")
        if req.kind == "latest" and req.learner_state is None:
            raise ValueError("a latest checkpoint needs the learner state (it is what a resume loads)")
        # `optimizer.state_dict()` holds references to live tensors that the next learner step
        # changes in place: copy now, so the checkpoint is this step's and nothing else's
        req = replace(req, adapter=snapshot(req.adapter), learner_state=snapshot(req.learner_state))
        self._superseded(self._queue.push(Job.of(req)))
        self.stats.pending = len(self._queue)
        self._wake.set()

    async def run(self) -> None:
        """The stage: write queued checkpoints until `close()` (or cancellation)."""
        self._running = True
        try:
            with anyio.CancelScope() as self._scope:
                while (job := await self._next_job()) is not None:
                    self._in_flight = job
                    await self._attempt(job)
                    self._in_flight = None
        finally:
            for job in [*self._queue.jobs, *([self._in_flight] if self._in_flight else [])]:
                if job.staged is not None:
                    job.staged.discard()
            if self._own_store:
                with anyio.CancelScope(shield=True):
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
            job, wait = self._queue.next_ready(time.monotonic())
            if job is not None:
                self.stats.pending = len(self._queue)
                return job
            if wait is None and self._closing:
                return None
            self._wake.clear()  # no await since next_ready: no submit can slip in between
            with anyio.move_on_after(math.inf if wait is None else wait):
                await self._wake.wait()

    async def _attempt(self, job: Job) -> None:
        try:
            if job.staged is None:  # the job owns the folder before the thread writes into it
                job.staged = Staged(Path(tempfile.mkdtemp(prefix="jobrl-ckpt-")), {})
            if not job.staged.files:
                job.staged.files = await anyio.to_thread.run_sync(stage, job.request, job.staged.folder)
            await self._commit(job)
        except Exception as exc:  # a storage problem must never stop training: report, retry
            self._failed(job, exc)
        else:
            self.stats.written += 1
            job.staged.discard()

    def _failed(self, job: Job, exc: Exception) -> None:
        job.attempts += 1
        delay = min(self.retry_max_s, self.retry_base_s * 2 ** (job.attempts - 1))
        job.not_before = time.monotonic() + delay
        reason = str(exc) if isinstance(exc, (StorageError, CheckpointError)) else f"{type(exc).__name__}: {exc}"
        self.stats.failed += 1
        self.stats.last_error = reason
        for kind in sorted(job.kinds):
            self._on_result(kind, False)
        get_logger("checkpoints").warning(
            "checkpoint_failed", kind=",".join(sorted(job.kinds)), step=job.step, reason=reason,
            attempt=job.attempts, retry_in_s=round(delay, 3),
        )
        self._superseded(self._queue.requeue(job))
        self.stats.pending = len(self._queue)

    def _superseded(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.stats.superseded += 1
            if job.staged is not None:
                job.staged.discard()
            get_logger("checkpoints").info("checkpoint_superseded", step=job.step, kind=job.request.kind)

    async def _commit(self, job: Job) -> None:
        assert job.staged is not None
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
        for kind in KINDS:
            if kind in job.kinds and kind not in job.pointers_done:
                await self._store.write_bytes(f"{kind}.json", pointer_bytes(folder, job.step, job.validation_score))
                job.pointers_done.add(kind)
                self._on_result(kind, True)
                get_logger("checkpoints").info(
                    "checkpoint_saved", kind=kind, uri=self._store.uri(folder), step=job.step
                )
        await self._retain()

    async def _folder_for(self, step: int) -> str:
        """The folder for `step`: the one this writer already uses, else the first name with no
        complete checkpoint in it (leftovers of an interrupted write are cleared first)."""
        if step in self._folder_of:
            return self._folder_of[step]
        found = folders_from_listing(await self._store.list(step_folder(step)))
        suffix = 0
        while (name := step_folder(step, suffix)) in found and found[name].complete:
            suffix += 1
        if name in found:
            await self._store.delete_prefix(f"{name}/")
        self._folder_of[step] = name
        return name

    async def _upload(self, folder: str, staged: Staged, names: list[str]) -> None:
        await settle_all([self._store.upload_file(f"{folder}/{n}", staged.folder / n) for n in names])

    async def _write_manifest(self, folder: str, manifest: dict) -> None:
        where = self._store.uri(folder)
        listing = await self._store.list(f"{folder}/")
        check_sizes(manifest, {o.key.rpartition("/")[2]: o.size for o in listing}, where)
        raw = manifest_bytes(manifest)
        key = f"{folder}/{MANIFEST}"
        await self._store.write_bytes(key, raw)
        if await self._store.read_bytes(key, max_bytes=MAX_MANIFEST_BYTES) != raw:
            raise CheckpointError(f"{where}: manifest.json read back different bytes than were written")
        self._committed[folder] = manifest

    async def _retain(self) -> None:
        """Delete folders retention no longer keeps; pointers are read from the store, so a
        best written by an earlier run is kept too. A failure here is reported, never fatal."""
        try:
            pointers = {kind: await read_pointer(self._store, kind) for kind in KINDS}
            folders = folders_from_listing(await self._store.list())
            best, latest = (p.path if p else None for p in (pointers["best"], pointers["latest"]))
            for name in folders_to_delete(folders, best, latest, self.keep_latest):
                await self._store.delete(f"{name}/{MANIFEST}")  # incomplete first, then gone
                await self._store.delete_prefix(f"{name}/")
                self._committed.pop(name, None)
                self._folder_of = {s: f for s, f in self._folder_of.items() if f != name}
        except Exception as exc:
            get_logger("checkpoints").warning("checkpoint_retention_failed", reason=str(exc))


# ---------------------------------------------------------------- readers


@dataclass
class LoadedCheckpoint:
    uri: str  # the step folder
    step: int
    adapter_dir: Path  # loadable by PeftModel.from_pretrained(base, adapter_dir)
    adapter: dict[str, torch.Tensor]
    adapter_config: dict
    learner_state: dict | None
    trainer: TrainerState
    manifest: dict


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
    """best.json / latest.json, or None when there is none."""
    key = f"{kind}.json"
    if not await store.exists(key):
        return None
    return parse_pointer(await store.read_bytes(key, max_bytes=MAX_POINTER_BYTES), store.uri(key))


async def fetch_verified(store: Store, folder: str, dest: Path) -> dict:
    """Download `folder`'s files into `dest` and check each one's sha256 against the manifest.
    Nothing is deserialised here; the manifest is returned once every file verified."""
    where = store.uri(folder)
    if not await store.exists(f"{folder}/{MANIFEST}"):
        raise CheckpointError(f"{where} has no manifest.json: it is incomplete or not a checkpoint")
    manifest = parse_manifest(await store.read_bytes(f"{folder}/{MANIFEST}", MAX_MANIFEST_BYTES), where)
    listing = await store.list(f"{folder}/")
    check_sizes(manifest, {o.key.rpartition("/")[2]: o.size for o in listing}, where)
    dest.mkdir(parents=True, exist_ok=True)
    names = list(manifest["files"])
    await settle_all([store.download_file(f"{folder}/{n}", dest / n) for n in names])
    for name in names:
        actual = await anyio.to_thread.run_sync(file_entry, dest / name)
        expected = manifest["files"][name]
        if actual != {"sha256": expected["sha256"], "size": expected["size"]}:
            raise CheckpointError(
                f"{where}: {name} does not match its manifest (sha256 {actual['sha256'][:12]}..., "
                f"expected {expected['sha256'][:12]}...): the file is corrupt or was modified"
            )
    return manifest


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
        manifest = await fetch_verified(store, folder, dest)
        where = store.uri(folder)
    return await anyio.to_thread.run_sync(_load_files, dest, manifest, where)


async def _pointed_folder(store: Store) -> str:
    for kind in KINDS:
        pointer = await read_pointer(store, kind)
        if pointer is not None:
            return pointer.path
    raise CheckpointError(
        f"no checkpoint at {store.uri()}: neither best.json nor latest.json is there"
        " (name a step folder, e.g. .../step-000010)"
    )


def _load_files(dest: Path, manifest: dict, where: str) -> LoadedCheckpoint:
    """Deserialise verified files: safetensors, JSON and weights-only torch.load, nothing else."""
    import torch
    from safetensors.torch import load_file

    try:
        adapter = load_file(dest / ADAPTER)
        adapter_config = orjson.loads((dest / ADAPTER_CONFIG).read_bytes())
        trainer = TrainerState.from_dict(orjson.loads((dest / TRAINER_STATE).read_bytes()), f"{where}: {TRAINER_STATE}")
        learner_state = None
        if LEARNER_STATE in manifest["files"]:
            learner_state = torch.load(dest / LEARNER_STATE, weights_only=True, map_location="cpu")
    except CheckpointError:
        raise
    except Exception as exc:  # verified bytes that do not load: not a checkpoint we wrote
        raise CheckpointError(f"{where}: cannot load ({type(exc).__name__}: {exc})") from None
    if trainer.step != manifest["step"]:
        raise CheckpointError(f"{where}: trainer state is for step {trainer.step}, the manifest for {manifest['step']}")
    return LoadedCheckpoint(where, manifest["step"], dest, adapter, adapter_config, learner_state, trainer, manifest)


async def find_latest(uri: str, cfg: Config) -> str | None:
    """The newest resumable checkpoint that verifies: latest.json's target, else (one clear
    line logged per bad one) the previous complete resumable folder. None: start fresh."""
    log = get_logger("checkpoints")
    async with open_store(uri, cfg.storage) as store:
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
            with tempfile.TemporaryDirectory(prefix="jobrl-verify-") as tmp:
                try:
                    await fetch_verified(store, name, Path(tmp))
                    return store.uri(name)
                except (CheckpointError, StorageError) as exc:
                    log.warning("checkpoint_invalid", uri=store.uri(name), reason=str(exc),
                                action="trying the previous checkpoint")
    return None


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
        found = await asyncio.gather(*(_describe(store, f, pointers) for f in folders.values() if f.complete))
    return [info for info in found if info is not None]


async def _describe(store: Store, folder: Folder, pointers: dict[str, Pointer | None]) -> CheckpointInfo | None:
    where = store.uri(folder.name)
    try:
        manifest = parse_manifest(await store.read_bytes(f"{folder.name}/{MANIFEST}", MAX_MANIFEST_BYTES), where)
        check_sizes(manifest, folder.files, where)
    except (CheckpointError, StorageError) as exc:
        get_logger("checkpoints").warning("checkpoint_invalid", uri=where, reason=str(exc))
        return None
    best, latest = pointers["best"], pointers["latest"]
    is_best = best is not None and best.path == folder.name
    score = manifest["validation_score"]
    if score is None and is_best:
        score = best.validation_score
    return CheckpointInfo(
        step=manifest["step"], path=folder.name, uri=where, kind=str(manifest.get("kind", "")),
        validation_score=score, size=sum(folder.files.values()), time=str(manifest.get("time", "")),
        is_best=is_best, is_latest=latest is not None and latest.path == folder.name,
    )
