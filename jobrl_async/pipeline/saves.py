"""Checkpoint requests: what the pipeline hands the checkpoint writer, and when.

Invariant: one request holds weights and a trainer state of the same step. A `latest` is copied
on the device right after a learner step, by the learner stage, under the policy lock, so no step
can change the weights or the optimizer state under the copy; a `best` carries the snapshot its
validation round sampled (validation.py). The writer owns the copies it is given: training never
waits for an upload.
"""

from __future__ import annotations

from ..checkpoints import SaveRequest, TrainerState, capture_rng, snapshot
from ..ops.log import get_logger
from ..policy.model import Policy, adapter_state
from .assemble import Parts, Progress
from .validation import Snapshot

log = get_logger("pipeline")


class Saves:
    def __init__(self, parts: Parts, progress: Progress, total_steps: int) -> None:
        self.parts = parts
        self.progress = progress
        self.total_steps = total_steps

    def trainer_state(self) -> TrainerState:
        pr = self.progress
        return TrainerState(
            step=pr.last_step, epoch=pr.last_epoch, position=pr.last_position + 1,
            policy_version=self.parts.policy.version, best_score=pr.best_score,
            config_digest=self.parts.cfg.digest(), rng=capture_rng(),
        )

    def latest_due(self, step: int) -> bool:
        """A `latest` every `checkpoints.latest_every_steps` steps; the last step's is the final one."""
        every = self.parts.cfg.checkpoints.latest_every_steps
        return bool(every) and step % every == 0 and step < self.total_steps

    async def latest(self) -> None:
        """Call between learner steps, holding the policy lock."""
        if self.parts.writer is None or self.progress.last_step == 0:
            return
        weights, state = await self.parts.device.run(self._copy_for_latest)
        self._submit("latest", weights, self.trainer_state(), learner_state=state)

    def best(self, chosen: Snapshot, validation_round: int) -> None:
        score = chosen.trainer.best_score
        self._submit("best", chosen.weights, chosen.trainer, validation_score=score, validation_round=validation_round)

    def _copy_for_latest(self) -> tuple[dict, dict]:
        return adapter_state(self.parts.policy), snapshot(self.parts.learner.state_dict())

    def _submit(self, kind: str, weights: dict, trainer: TrainerState, *, validation_score: float | None = None,
                validation_round: int | None = None, learner_state: dict | None = None) -> None:
        if self.parts.writer is None:
            return
        self.parts.writer.submit(SaveRequest(
            kind=kind, step=trainer.step, validation_score=validation_score, adapter=weights,  # type: ignore[arg-type]
            adapter_config=adapter_config(self.parts.policy), learner_state=learner_state, trainer=trainer,
            validation_round=validation_round,
        ))


def adapter_config(policy: Policy) -> dict:
    """The PEFT adapter config as saved next to the weights, naming the base model by its id."""
    config = policy.model.peft_config["default"].to_dict()
    config["base_model_name_or_path"] = policy.base_name
    return config
