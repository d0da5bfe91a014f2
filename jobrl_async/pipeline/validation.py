"""Validation rounds: the adapter each round sampled, and which rounds make a new `best`.

A round's LoRA weights are copied, with the trainer state they belong to, when its samples are
drawn, under the policy lock the learner takes for its steps: the adapter saved as `best` is
exactly the validated one, under the step it had learned.

Invariant: a `best` is saved only for a trusted round (its judge_failed share is at most
`validation.max_failed_share`: a mean over too few offers decides nothing) whose score beats every
best before it, this run's and the ones on record (`Progress.best_score`, restored on resume).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, replace

from ..checkpoints import TrainerState
from ..collector import Collector, ValidationResult
from ..config import Config, ValidationConfig
from ..flow.records import Context, ScoredTrajectory, Trajectory
from ..generation.generator import Generator
from ..judge.stage import Judge, judge_workers
from ..ops.log import get_logger
from .assemble import Progress
from .work import validation_work

log = get_logger("pipeline")


@dataclass(frozen=True)
class Snapshot:
    """The adapter a validation round sampled from, with the trainer state those weights belong to."""

    weights: dict
    trainer: TrainerState


class ValidationRounds:
    def __init__(self, cfg: ValidationConfig, progress: Progress) -> None:
        self.cfg = cfg
        self.progress = progress
        self.snapshots: dict[int, Snapshot] = {}  # round (its step) -> what it sampled from

    def sampled(self, step: int, snapshot: Snapshot) -> None:
        self.snapshots[step] = snapshot

    def new_best(self, result: ValidationResult) -> Snapshot | None:
        """The snapshot to save as the new `best` (its trainer state carrying the score), if any."""
        snapshot = self.snapshots.pop(result.step, None)
        best = self.progress.best_score
        trusted = result.judge_failed_share <= self.cfg.max_failed_share
        if not trusted:
            log.warning("validation_not_trusted", step=result.step, score=result.score,
                        judge_failed_share=round(result.judge_failed_share, 4), limit=self.cfg.max_failed_share)
        if not trusted or result.score is None or (best is not None and result.score <= best):
            return None
        self.progress.best_score = result.score
        if snapshot is None:
            return None
        return replace(snapshot, trainer=replace(snapshot.trainer, best_score=result.score))


async def score_all(judge: Judge, trajectories: Iterable[Trajectory] | AsyncIterable[Trajectory],
                    concurrency: int) -> list[ScoredTrajectory]:
    """Judge trajectories as they come, at most `concurrency` offers in flight, in arrival order."""
    limit = asyncio.Semaphore(max(1, concurrency))

    async def score(t: Trajectory) -> ScoredTrajectory:
        async with limit:
            return await judge.score_trajectory(t)

    async with asyncio.TaskGroup() as tg:
        if isinstance(trajectories, AsyncGenerator):
            async with aclosing(trajectories):  # a failed score stops the sampling at once
                tasks = [tg.create_task(score(t)) async for t in trajectories]
        elif isinstance(trajectories, AsyncIterable):
            tasks = [tg.create_task(score(t)) async for t in trajectories]
        else:
            tasks = [tg.create_task(score(t)) for t in trajectories]
    return [task.result() for task in tasks]


async def score_round(cfg: Config, generator: Generator, judge: Judge, contexts: list[Context],
                      step: int) -> ValidationResult:
    """One validation round outside a run's stages (`eval`, `bench learning`'s final round): the
    round of `step` (its requests, hence its sampling seeds) sampled from the current weights and judged."""
    work = validation_work(cfg, contexts, step)
    scored = await score_all(judge, await generator.generate(list(work.requests)), judge_workers(cfg.judge))
    collector = Collector()
    collector.expect_validation(step, contexts, cfg.validation.attempts)
    result = None
    for s in scored:
        result = collector.add(s) or result
    assert isinstance(result, ValidationResult)
    return result
