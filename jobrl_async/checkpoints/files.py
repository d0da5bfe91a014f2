"""A checkpoint's files in a local folder: serialised from a `SaveRequest` (`stage`), and
deserialised into a `LoadedCheckpoint` (`load_files`). No store here: the writer uploads what
`stage` wrote, the readers download and verify before `load_files` runs.

Invariant: only safetensors and JSON are written and read, so loading a checkpoint runs no
code: nothing is pickled or unpickled (the learner state goes through tensor_json.py). Blocking:
both run in a worker thread.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import CheckpointError
from .formats import ADAPTER, ADAPTER_CONFIG, LEARNER_JSON, LEARNER_TENSORS, TRAINER_STATE, json_object
from .pending import SaveRequest
from .state import TrainerState
from .tensor_json import join_tensors, split_tensors

if TYPE_CHECKING:
    import torch


@dataclass
class Staged:
    """A checkpoint's files, serialised into a local scratch folder, with their sha256 and size."""

    folder: Path
    files: dict[str, dict[str, Any]]  # name -> {"sha256", "size"}


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


def stage(req: SaveRequest, folder: Path) -> dict[str, dict[str, Any]]:
    """Serialise `req` into `folder`; the files' sha256 and size."""
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


def load_files(dest: Path, manifest: dict, where: str) -> LoadedCheckpoint:
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
    """The file's manifest entry: {"sha256", "size"}."""
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"sha256": digest, "size": path.stat().st_size}
