"""What the producer hands the generator: one step's training batch, or a validation round.

A validation round is the same requests (hence the same sampling seeds) for a run and for `eval`,
so `eval` of a `best` redraws exactly the round that scored it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..config import Config
from ..flow.records import Context, Split, StepPlan
from ..generation.generator import SampleRequest
from ..producer import plan_steps


@dataclass(frozen=True)
class Work:
    """One generator job: a step's training batch or its validation round."""

    split: Split
    step: int
    requests: tuple[SampleRequest, ...]

    @property
    def trajectories(self) -> int:
        return sum(r.attempts for r in self.requests)


def training_work(plan: StepPlan, attempts: int) -> Work:
    return Work("train", plan.step, tuple(
        SampleRequest(c, "train", plan.step, i, attempts) for i, c in enumerate(plan.contexts)))


def validation_due(cfg: Config, has_validation: bool, step: int) -> bool:
    """A round every `validation.every_steps` steps (0: never), when there is a validation split."""
    every = cfg.validation.every_steps
    return bool(every) and has_validation and step % every == 0


def validation_contexts(cfg: Config, validation: list[Context]) -> list[Context]:
    limit = cfg.validation.max_contexts
    return validation[:limit] if limit else validation


def validation_work(cfg: Config, contexts: list[Context], step: int) -> Work:
    attempts = cfg.validation.attempts
    return Work("validation", step, tuple(
        SampleRequest(c, "validation", step, i, attempts) for i, c in enumerate(contexts)))


def steps_to_run(cfg: Config, train: list[Context], start_step: int, total_steps: int) -> Iterator[StepPlan]:
    """The steps a run still has to do: from the resume point to `total_steps`."""
    for plan in plan_steps(train, seed=cfg.data.seed, batch_contexts=cfg.training.batch_contexts,
                           epochs=cfg.training.epochs, start_step=start_step):
        if plan.step > total_steps:
            return
        yield plan
