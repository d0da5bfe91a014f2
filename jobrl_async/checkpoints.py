"""Checkpoints: a writer stage that never blocks training, and readers that trust nothing.

Layout under the checkpoints URI (a path, file:// or s3://):

    step-000123/adapter_model.safetensors   LoRA weights, peft naming (PeftModel.from_pretrained)
    step-000123/adapter_config.json         peft LoraConfig
    step-000123/learner_state.safetensors   optimizer + scheduler tensors  } resumable checkpoints
    step-000123/learner_state.json          the rest of their state        } only (tensor_json.py)
    step-000123/trainer_state.json          step, epoch, position, policy version, best score, RNG
    step-000123/manifest.json               written LAST: sha256 and size of every file above
    best.json, latest.json                  pointers: {"step", "path", "validation_score", "time"}
    lease.json                              the run writing here (lease.py)

Commit protocol, per checkpoint: files -> size check -> manifest -> read-back -> pointers ->
retention. A folder is complete only once its manifest is there, and a pointer moves only after
that, so a reader (or a resume after `kill -9`) never sees a partial checkpoint. A complete
folder is never rewritten: the writer may only add files to a folder it wrote itself (a latest
after its step's best), then replace the manifest; a new run meeting a complete folder of the
same step writes beside it (`step-000123-1`). Readers verify every file's sha256 against the
manifest before anything is deserialised, and deserialise safetensors and JSON only: nothing is
unpickled (checkpoints of the first format, with a pickled `learner_state.pt`, are refused).
Every read is bounded: pointers and manifests by fixed caps, files by their manifest's size.
The writer deletes only names it writes itself: anything else under the URI is left alone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import math
import random
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import anyio
import anyio.to_thread
import orjson
from botocore.exceptions import BotoCoreError, ClientError

from . import __version__
from .config import Config
from .errors import CheckpointError, StorageError
from .log import get_logger
from .storage import ObjectInfo, Store, open_store
from .tensor_json import join_tensors, split_tensors

if TYPE_CHECKING:  # torch is imported lazily: `checkpoints list` never pays for it
    import torch

    from .lease import CheckpointLease

Kind = Literal["best", "latest"]
KINDS: tuple[Kind, ...] = ("best", "latest")

ADAPTER = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LEARNER_TENSORS = "learner_state.safetensors"
LEARNER_JSON = "learner_state.json"
TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"
PICKLED_LEARNER_STATE = "learner_state.pt"  # the first format's: never loaded, only cleaned up
REQUIRED_FILES = (ADAPTER, ADAPTER_CONFIG, TRAINER_STATE)
LEARNER_FILES = (LEARNER_TENSORS, LEARNER_JSON)
ALLOWED_FILES = frozenset((*REQUIRED_FILES, *LEARNER_FILES))
OWN_FILES = frozenset((*ALLOWED_FILES, MANIFEST, PICKLED_LEARNER_STATE))  # what retention may delete

# Read-back bounds: everything read from the store is untrusted until verified.
MiB = 1024 * 1024
MAX_POINTER_BYTES = 64 * 1024
MAX_MANIFEST_BYTES = 1 * MiB
MAX_JSON_FILE_BYTES = 16 * MiB  # adapter_config.json, trainer_state.json, learner_state.json
DEFAULT_MAX_FILE_BYTES = 4096 * MiB  # checkpoints.max_file_mb's default

# \A...\Z and re.ASCII: `$` would accept a trailing newline and `\d` non-ASCII digits
FOLDER_RE = re.compile(r"\Astep-(\d{6,12})(?:-(\d{1,6}))?\Z", re.ASCII)
SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z", re.ASCII)
TIME_RE = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)\Z", re.ASCII)
RETRY_BASE_S = 1.0
RETRY_MAX_S = 60.0
# What a checkpoint write may retry: the store or the local disk failing, never a bug of ours.
RETRYABLE = (StorageError, OSError, BotoCoreError, ClientError, aiohttp.ClientError, asyncio.TimeoutError)


class ObsoleteCheckpoint(CheckpointError):
    """A checkpoint of the first format (a pickled learner state): this version refuses it."""


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
    learner_state: dict | None  # Learner.state_dict(): optimizer + scheduler; None for a weights-only best
    trainer: TrainerState
    # a best: the step whose validation round sampled these weights; `eval` redraws that round
    validation_round: int | None = None


def snapshot(value: Any) -> Any:
    """A private CPU copy of every tensor in a nest of dicts, lists and tuples: what a caller
    of `CheckpointWriter.submit` hands over (the learner changes its own tensors in place)."""
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
        if other.request.learner_state is not None and self.request.learner_state is None:
            self.request, self.staged = other.request, other.staged  # the writer sweeps the other folder


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
    """A checkpoint's files, serialised into a local scratch folder, with their sha256 and size."""

    folder: Path
    files: dict[str, dict[str, Any]]  # name -> {"sha256", "size"}


def stage(req: SaveRequest, folder: Path) -> dict[str, dict[str, Any]]:
    """Serialise `req` into `folder`; the files' sha256 and size (blocking: a worker thread)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in req.adapter.items()}
    save_file(tensors, folder / ADAPTER, metadata={"format": "pt"})  # what peft writes
    (folder / ADAPTER_CONFIG).write_bytes(adapter_config_json(req.adapter_config))
    (folder / TRAINER_STATE).write_bytes(orjson.dumps(req.trainer.to_dict(), option=orjson.OPT_INDENT_2))
    if req.learner_state is not None:
        doc, tensors = learner_state_files(req.learner_state)
        save_file(tensors, folder / LEARNER_TENSORS)
        (folder / LEARNER_JSON).write_bytes(doc)
    return {p.name: file_entry(p) for p in sorted(folder.iterdir())}


def learner_state_files(state: dict) -> tuple[bytes, dict[str, torch.Tensor]]:
    """(learner_state.json, learner_state.safetensors' tensors): no pickle anywhere."""
    import torch

    doc, tensors = split_tensors(state, lambda v: isinstance(v, torch.Tensor))
    # safetensors refuses tensors that share memory; each gets its own contiguous CPU copy
    owned = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    return orjson.dumps({"format": 1, "state": doc}), owned


def read_learner_state(folder: Path, where: str) -> dict:
    """The learner state `learner_state_files` wrote: safetensors + JSON, checked as it is rebuilt."""
    from safetensors.torch import load_file

    doc = json_object((folder / LEARNER_JSON).read_bytes(), f"{where}: {LEARNER_JSON}")
    if doc.get("format") != 1:
        raise CheckpointError(f"{where}: {LEARNER_JSON} has an unknown format {doc.get('format')!r}")
    state = join_tensors(doc.get("state"), load_file(folder / LEARNER_TENSORS), f"{where}: {LEARNER_JSON}")
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: {LEARNER_JSON} does not hold a learner state object")
    return state


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
        "format": 2,  # 2: the learner state as safetensors + JSON (1 pickled it)
        "step": step,
        # "latest" = resumable (carries the learner state); a weights-only best is "best"
        "kind": "latest" if LEARNER_JSON in files else "best",
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


def parse_manifest(raw: bytes, where: str, max_file: int = DEFAULT_MAX_FILE_BYTES) -> dict:
    """A manifest read back, checked field by field (it is untrusted until then)."""
    m = json_object(raw, f"{where}: manifest.json")
    if isinstance(m.get("files"), dict) and PICKLED_LEARNER_STATE in m["files"]:
        raise ObsoleteCheckpoint(
            f"{where} is of the first checkpoint format (a pickled {PICKLED_LEARNER_STATE}), which this "
            "version refuses to load: start fresh with --no-resume or another --checkpoints"
        )
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
    if (LEARNER_TENSORS in files) != (LEARNER_JSON in files):
        raise CheckpointError(f"{where}: manifest lists one of {LEARNER_TENSORS} and {LEARNER_JSON} without the other")
    for name, entry in files.items():
        _check_entry(name, entry, where, max_file)
    return m


def _check_entry(name: str, entry: Any, where: str, max_file: int) -> None:
    if name not in ALLOWED_FILES:  # also keeps names like "../x" out of the download folder
        raise CheckpointError(f"{where}: manifest lists an unexpected file {name!r}")
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise CheckpointError(f"{where}: manifest entry for {name} has no sha256")
    if not SHA256_RE.match(entry["sha256"]):
        raise CheckpointError(f"{where}: manifest sha256 of {name} is not 64 hex digits")
    size = entry.get("size")
    limit = MAX_JSON_FILE_BYTES if name.endswith(".json") else max_file
    if not is_count(size) or size > limit:
        hint = " (checkpoints.max_file_mb)" if limit == max_file else ""
        raise CheckpointError(f"{where}: manifest size of {name} must be 0..{limit} bytes, got {size!r}{hint}")


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
        return self.complete and all(name in self.files for name in LEARNER_FILES)

    @property
    def own_files(self) -> list[str]:
        """The files here this writer could have written: the only ones it ever deletes."""
        return [name for name in self.files if name in OWN_FILES]


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
    if isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError):
        return f"local disk: {type(exc).__name__}: {exc.strerror or exc}"
    if isinstance(exc, RETRYABLE):  # raw botocore/aiohttp text can carry URLs: the type only
        return f"storage: {type(exc).__name__}"
    return None


class CheckpointWriter:
    """The checkpoint writer stage. `submit` (on the event loop) never waits for I/O; `run`
    writes one checkpoint at a time: serialised in a worker thread, its files uploaded
    concurrently (the store bounds concurrency and goes multipart for large files).

    A write that fails on storage (the store, the network, the local disk) is reported
    (`checkpoint_failed`) and retried with backoff, never moving a pointer; after
    `checkpoints.max_attempts` tries it is given up (`checkpoint_abandoned`), so one stuck
    checkpoint never blocks the ones behind it, and as many failures in a row are reported as
    persistent (`on_result`'s third argument: /healthz turns 503) until a write succeeds.
    Any other exception is a bug and ends `run()` with it. With a lease, nothing moves a pointer
    or deletes a folder once another run holds the URI: `run()` ends with CheckpointLeaseLost.
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
        for kind in KINDS:
            if kind in job.kinds and kind not in job.pointers_done:
                await self._store.write_bytes(f"{kind}.json", pointer_bytes(folder, job.step, job.validation_score))
                job.pointers_done.add(kind)
                self._on_result(kind, True, None)
                get_logger("checkpoints").info(
                    "checkpoint_saved", kind=kind, uri=self._store.uri(folder), step=job.step
                )
        await self._retain()

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
        listing = await self._store.list(f"{folder}/")
        try:
            check_sizes(manifest, {o.key.rpartition("/")[2]: o.size for o in listing}, where)
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


def _remove_all_but(root: Path, keep: set[Path]) -> None:
    for child in root.iterdir():
        if child not in keep:
            shutil.rmtree(child, ignore_errors=True)


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


async def fetch_verified(store: Store, folder: str, dest: Path, max_file: int = DEFAULT_MAX_FILE_BYTES) -> dict:
    """Download `folder`'s files into `dest` and check each one's sha256 against the manifest.
    Nothing is deserialised here, and no file is read past the size its manifest gives; the
    manifest is returned once every file verified."""
    where = store.uri(folder)
    if not await store.exists(f"{folder}/{MANIFEST}"):
        raise CheckpointError(f"{where} has no manifest.json: it is incomplete or not a checkpoint")
    manifest = parse_manifest(await store.read_bytes(f"{folder}/{MANIFEST}", MAX_MANIFEST_BYTES), where, max_file)
    listing = await store.list(f"{folder}/")
    check_sizes(manifest, {o.key.rpartition("/")[2]: o.size for o in listing}, where)
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
    """Deserialise verified files: safetensors and JSON, nothing else (no pickle, no code)."""
    from safetensors.torch import load_file

    try:
        adapter = load_file(dest / ADAPTER)
        adapter_config = json_object((dest / ADAPTER_CONFIG).read_bytes(), f"{where}: {ADAPTER_CONFIG}")
        trainer = TrainerState.from_dict(orjson.loads((dest / TRAINER_STATE).read_bytes()), f"{where}: {TRAINER_STATE}")
        learner_state = None
        if LEARNER_JSON in manifest["files"]:
            learner_state = read_learner_state(dest, where)
    except CheckpointError:
        raise
    except Exception as exc:  # verified bytes that do not load: not a checkpoint we wrote
        raise CheckpointError(f"{where}: cannot load ({type(exc).__name__}: {exc})") from None
    if trainer.step != manifest["step"]:
        raise CheckpointError(f"{where}: trainer state is for step {trainer.step}, the manifest for {manifest['step']}")
    return LoadedCheckpoint(where, manifest["step"], dest, adapter, adapter_config, learner_state, trainer, manifest)


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
