"""The seed's loop, kept as the baseline: generate all, judge all, learn, one step after another.

The same stages' work as the pipeline (pipeline.stages), one step after another: the learner
waits for the judge and the next step's sampling for the learner, as in TRL's GRPOTrainer. Within
a step an offer is judged as soon as it is sampled. `bench pipeline` runs both on the same work.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING

from ..flow.records import StepPlan, Trajectory
from ..judge.stage import judge_workers
from ..policy.device import device_user
from .publish import publish_weights
from .reporting import GenerationTiming
from .validation import score_all
from .work import Work

if TYPE_CHECKING:
    from .stages import Pipeline


async def sequential_steps(pipeline: Pipeline) -> None:
    await publish_weights(pipeline.parts, at_start=True)  # a resumed run's servers sample from its adapter
    for plan in pipeline.plans():
        if pipeline.stop.is_set():
            break
        await _step(pipeline, plan)


async def _step(pipeline: Pipeline, plan: StepPlan) -> None:
    await pipeline.gate.acquire()
    works = [pipeline.plan_training(plan)]
    if pipeline.validation_due(plan.step):
        works.append(pipeline.plan_validation(plan.step))
    device_user.set("generator")
    with pipeline.judge_busy.busy():  # each offer is judged as soon as it ends
        results = await score_all(pipeline.parts.judge, _offers(pipeline, works), judge_workers(pipeline.cfg.judge))
    for scored in results:
        pipeline.route(pipeline.collector.add(scored))
    device_user.set("learner")  # a judged step is learned, even when a stop came meanwhile
    batch = pipeline.learn_q.get_nowait()
    assert batch is not None  # the end mark is the pipelined schedule's
    await pipeline.learn_one(batch)
    pipeline.report.emit_ready()


async def _offers(pipeline: Pipeline, works: list[Work]) -> AsyncGenerator[Trajectory, None]:
    for work in works:
        timing = GenerationTiming()
        async with aclosing(pipeline.stream(work)) as offers:  # closed with this generator, not by the GC
            async for t in offers:
                timing.offer_ready()
                yield t
        if work.split == "train":
            pipeline.report.generated(work.step, timing)
