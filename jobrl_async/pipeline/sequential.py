"""The seed's loop, kept as the baseline: generate all, judge all, learn, one step after another.

The same stages' work as the pipeline (pipeline.stages), in sequence: nothing overlaps, so the
generator and the learner wait for the judge, as TRL's GRPOTrainer does. `bench pipeline` runs
both on the same work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..device import device_user
from ..producer import StepPlan
from ..records import Trajectory
from .validation import score_all

if TYPE_CHECKING:
    from .stages import Pipeline


async def sequential_steps(pipeline: Pipeline) -> None:
    for plan in pipeline.plans():
        if pipeline.stop.is_set():
            break
        await _step(pipeline, plan)


async def _step(pipeline: Pipeline, plan: StepPlan) -> None:
    await pipeline.gate.acquire()
    works = [pipeline.plan_training(plan)]
    if pipeline.validation_due(plan.step):
        works.append(pipeline.plan_validation(plan.step))
    trajectories: list[Trajectory] = []
    device_user.set("generator")
    for work in works:
        trajectories += await pipeline.sample(work)
    with pipeline.judge_busy.busy():
        results = await score_all(pipeline.parts.judge, trajectories, pipeline.cfg.judge.max_concurrency)
    for scored in results:
        pipeline.route(pipeline.collector.add(scored))
    device_user.set("learner")  # a judged step is learned, even when a stop came meanwhile
    await pipeline.learn_one(pipeline.learn_q.get_nowait())
    pipeline.report.emit_ready()
