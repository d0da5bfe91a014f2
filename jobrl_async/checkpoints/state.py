"""Where training stands (trainer_state.json) and the random generators' states.

Invariant: a `TrainerState` built from a file holds counts (`step`, `epoch`, `position`,
`policy_version`) that are integers >= 0, a finite `best_score` or None, a short
`config_digest` and an `rng` object (`TrainerState.from_dict` refuses anything else, naming the
field). `restore_rng(capture_rng())` puts python's `random`, numpy's global generator and
torch's CPU (and CUDA) generators back where they were; a malformed RNG state is one
CheckpointError naming what is wrong.
"""

from __future__ import annotations

import base64
import random
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError
from ..ops.log import get_logger
from .formats import is_count, is_finite_number

if TYPE_CHECKING:  # torch is imported lazily: `checkpoints list` never pays for it
    import torch


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
        if best is not None and not is_finite_number(best):
            raise CheckpointError(f"{where}: 'best_score' must be a number or null, got {best!r}")
        digest, rng = data.get("config_digest"), data.get("rng", {})
        if not isinstance(digest, str) or len(digest) > 128:
            raise CheckpointError(f"{where}: 'config_digest' must be a short string")
        if not isinstance(rng, dict):
            raise CheckpointError(f"{where}: 'rng' must be an object")
        return cls(data["step"], data["epoch"], data["position"], data["policy_version"],
                   None if best is None else float(best), digest, rng)


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
        _restore_cuda(rng.get("cuda"))
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as exc:  # numbers past C's range too
        raise CheckpointError(f"RNG state is malformed ({type(exc).__name__}: {exc})") from None


def _restore_cuda(cuda: Any) -> None:
    import torch

    if not cuda or not torch.cuda.is_available():
        return
    if len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_byte_tensor(s, "cuda") for s in cuda])
    else:
        get_logger("checkpoints").warning(
            "rng_cuda_skipped", saved_devices=len(cuda), devices=torch.cuda.device_count()
        )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise CheckpointError(f"RNG state: '{what}' must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise CheckpointError(f"RNG state: '{what}' is not valid base64") from None


def _byte_tensor(text: Any, what: str) -> torch.Tensor:
    import torch

    return torch.frombuffer(bytearray(_unb64(text, what)), dtype=torch.uint8)
