"""Stopping a run: when the stages stop (the work is done, or a signal and the grace), and
winding down: the last learned step is saved, the uploads finish, and what is left is counted.
After a clean stop and after a stage crashed alike, every trajectory is counted: not judged
(`dropped`), or judged and then learned or left unlearned (`Learning`): judged work is lost only
when the grace has no time left to learn it, and then it is counted, never silently.

After the grace (or the work) ends, nothing new is sampled or judged; the learner still learns the
complete steps already queued while the grace has room for a step of the last one's length (device
time only: nothing more is paid for). The final `latest` holds the weights and the progress of the
same step: a step once started is learned and recorded first (stages.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..ops.log import get_logger

if TYPE_CHECKING:
    from ..collector import StepBatch
    from .reporting import Summary
    from .stages import Pipeline

log = get_logger("pipeline")


@dataclass
class Grace:
    """The shutdown grace on the monotonic clock: unbounded until a stop starts it."""

    ends: float | None = None

    def start(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds

    def fits(self, seconds: float) -> bool:
        """Whether work of `seconds` started now ends within the grace."""
        return self.ends is None or time.monotonic() + seconds <= self.ends


async def until_done_or_stopped(pipeline: Pipeline) -> None:
    """Until the work is drained, or a stop and then at most `pipeline.shutdown_grace_s` for
    the steps in flight to finish."""
    done = asyncio.create_task(pipeline.drained.wait())
    stopped = asyncio.create_task(pipeline.stop.wait())
    await asyncio.wait({done, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not done.done():
        grace = pipeline.cfg.pipeline.shutdown_grace_s
        pipeline.grace.start(grace)
        log.info("shutdown_started", grace_s=grace, in_flight_steps=pipeline.gate.in_flight)
        await asyncio.wait({done}, timeout=grace)  # finish what is in flight, if it fits
    done.cancel()
    stopped.cancel()


async def with_wind_down(pipeline: Pipeline, body: Callable[[], Awaitable[None]]) -> Summary:
    """Run `body` beside the checkpoint writer, then keep what was paid for: a final `latest`
    and the pending uploads, also when a stage crashed. A forced stop (this task cancelled: a
    second signal) skips both, and a crashed writer ends the run."""
    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as tg:
            writer = pipeline.parts.writer
            if writer is not None:
                tg.create_task(writer.run(), name="checkpoints")
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except BaseException:
                await wind_down(pipeline, crashed=True)
                raise
            await wind_down(pipeline)
    finally:
        pipeline.report.finish(started, pipeline.collector.tally)
    return pipeline.summary


async def wind_down(pipeline: Pipeline, crashed: bool = False) -> None:
    try:
        _abandon_leftovers(pipeline)
        await _final_latest(pipeline)
    except Exception as exc:  # never hide the crash being reported; still let uploads finish
        if not crashed:
            raise
        log.error("wind_down_failed", error=f"{type(exc).__name__}: {exc}")
    writer = pipeline.parts.writer
    if writer is not None:
        await writer.close(timeout=max(pipeline.cfg.pipeline.shutdown_grace_s, 60.0))


def _abandon_leftovers(pipeline: Pipeline) -> None:
    for q in (pipeline.gen_q, pipeline.judge_q, pipeline.scored_q):
        while not q.empty():
            q.get_nowait()
    # complete steps the learner did not take (a crash), and those waiting for an earlier step
    queued = [pipeline.learn_q.get_nowait() for _ in range(pipeline.learn_q.qsize())]
    waiting = [pipeline.ready.pop(step) for step in sorted(pipeline.ready)]
    leave_unlearned(pipeline, [b for b in queued + waiting if b is not None], reason="shutdown")
    unfinished = {key: n for key, n in pipeline.collector.pending_judged().items() if key.startswith("train:")}
    if unfinished:
        log.warning("judged_trajectories_unlearned", reason="shutdown: their step was not fully judged",
                    by_step=unfinished, n=sum(unfinished.values()))
    dropped = pipeline.collector.abandon_all()
    if dropped:
        log.warning("trajectories_dropped", reason="shutdown", by_step=dropped)
    pipeline.report.emit_ready(final=True)


def leave_unlearned(pipeline: Pipeline, batches: list[StepBatch], reason: str) -> None:
    """Complete steps that will not be learned: their judged trajectories counted as unlearned."""
    by_step = {f"train:{b.step}": b.judged for b in batches if b.judged}
    for batch in batches:
        pipeline.report.dropped(batch.step)
    if by_step:
        pipeline.collector.learning.unlearned += sum(by_step.values())
        log.warning("judged_trajectories_unlearned", reason=reason, by_step=by_step, n=sum(by_step.values()))


async def _final_latest(pipeline: Pipeline) -> None:
    if pipeline.parts.writer is None or pipeline.learned_here == 0:  # nothing new since the last `latest`
        return
    if pipeline.learner_failed:
        log.warning("final_checkpoint_skipped", reason="the learner failed during a step",
                    last_step=pipeline.progress.last_step)
        return
    async with pipeline.policy_lock:
        await pipeline.saves.latest()
