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

A module per job, each with its invariant in its docstring:

    state.py        trainer state and the RNG states (trainer_state.json)
    pending.py      save requests and the queue of checkpoints not written yet (pure)
    formats.py      names, bounds, manifest and pointer formats (pure)
    files.py        a checkpoint's files in a local folder: staged, loaded (safetensors + JSON)
    tensor_json.py  a nest of tensors as JSON + a tensor table (pure)
    retention.py    which step folders are kept (pure)
    writer.py       the writer stage and its commit protocol
    readers.py      resume, load, list: verified before anything is deserialised
    lease.py        one run per checkpoints URI
"""

from .files import LoadedCheckpoint
from .formats import (
    ADAPTER,
    ADAPTER_CONFIG,
    LEARNER_FILES,
    LEARNER_JSON,
    LEARNER_TENSORS,
    MANIFEST,
    ObsoleteCheckpoint,
    manifest_bytes,
    parse_manifest,
    parse_pointer,
)
from .lease import CheckpointLease, CheckpointLeaseLost, acquire_lease
from .pending import Job, PendingQueue, SaveRequest, snapshot
from .readers import (
    CheckpointInfo,
    find_latest,
    list_checkpoints,
    load_checkpoint,
    preflight,
    read_pointer,
    scratch_dir,
    split_checkpoint_uri,
)
from .retention import Folder, folders_from_listing, folders_to_delete
from .state import TrainerState, capture_rng, restore_rng
from .writer import CheckpointWriter

__all__ = [
    "ADAPTER", "ADAPTER_CONFIG", "LEARNER_FILES", "LEARNER_JSON", "LEARNER_TENSORS", "MANIFEST",
    "CheckpointInfo", "CheckpointLease", "CheckpointLeaseLost", "CheckpointWriter", "Folder", "Job",
    "LoadedCheckpoint", "ObsoleteCheckpoint", "PendingQueue", "SaveRequest", "TrainerState",
    "acquire_lease", "capture_rng", "find_latest", "folders_from_listing", "folders_to_delete",
    "list_checkpoints", "load_checkpoint", "manifest_bytes", "parse_manifest", "parse_pointer",
    "preflight", "read_pointer", "restore_rng", "scratch_dir", "snapshot", "split_checkpoint_uri",
]
