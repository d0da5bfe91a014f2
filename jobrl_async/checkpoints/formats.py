"""The names under a checkpoints URI, and the manifest and pointer formats. Pure: no I/O.

    step-000123/           a step folder (`step-000123-1` beside a complete one of the same step)
        manifest.json      {"format": 2, "step", "kind", "validation_score", "validation_round",
                            "time", "package_version", "config_digest",
                            "files": {name: {"sha256", "size"}}}
    best.json, latest.json {"step", "path", "validation_score", "time"}

Invariant: whatever is read back from a store is untrusted until one of the parsers here has
checked it field by field. A manifest lists only the checkpoint's own file names (so no name
like "../x" reaches a download folder), each with a 64-hex-digit sha256 and a size within its
bound (`MAX_JSON_FILE_BYTES` for JSON, checkpoints.max_file_mb otherwise); a pointer names a
step folder whose step is the pointer's; names match `\\A...\\Z` ASCII patterns only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import orjson

from .. import __version__
from ..errors import CheckpointError

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


class ObsoleteCheckpoint(CheckpointError):
    """A checkpoint of the first format (a pickled learner state): this version refuses it."""


def is_count(value: Any) -> bool:
    """An integer >= 0 (JSON's true/false are not counts)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def json_object(raw: bytes, where: str) -> dict:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CheckpointError(f"{where} is not valid JSON") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{where} is not a JSON object")
    return value


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def step_folder(step: int, suffix: int = 0) -> str:
    """`step-000123`, or `step-000123-1` beside a complete folder of the same step."""
    return f"step-{step:06d}" + (f"-{suffix}" if suffix else "")


def folder_order(name: str) -> tuple[int, int]:
    m = FOLDER_RE.match(name)
    if m is None:
        raise ValueError(f"not a step folder: {name!r}")
    return int(m.group(1)), int(m.group(2) or 0)


# ---------------------------------------------------------------- manifest.json


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
    if score is not None and not is_finite_number(score):
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


# ---------------------------------------------------------------- best.json, latest.json


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
    if score is not None and not is_finite_number(score):
        raise CheckpointError(f"{where}: 'validation_score' must be a number or null")
    return Pointer(step, path, None if score is None else float(score), str(p.get("time", "")))
