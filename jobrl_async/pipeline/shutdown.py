"""Stopping a run: when the stages stop (the work is done, or a signal and the grace), and
winding down: what is left is counted as dropped, the last learned step is saved, the uploads
finish. After a clean stop and after a stage crashed alike: nothing paid for is lost.

The final `latest` holds the weights and the progress of the same step: the learner stage never
starts a step once stopping, and a step it had started is learned and recorded first (stages.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..log import get_logger

if TYPE_CHECKING:
    from .reporting import Summary
    from .stages import Pipeline

log = get_logger("pipeline")


async def until_done_or_stopped(pipeline: Pipeline) -> None:
    """Until the work is drained, or a stop and then at most `pipeline.shutdown_grace_s` for
    the steps in flight to finish."""
    done = asyncio.create_task(pipeline.drained.wait())
    stopped = asyncio.create_task(pipeline.stop.wait())
    await asyncio.wait({done, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not done.done():
        grace = pipeline.cfg.pipeline.shutdown_grace_s
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
    for q in (pipeline.gen_q, pipeline.judge_q, pipeline.scored_q, pipeline.learn_q):
        while not q.empty():
            q.get_nowait()
    dropped = pipeline.collector.abandon_all()
    if dropped:
        log.warning("trajectories_dropped", reason="shutdown", by_step=dropped)
    pipeline.report.emit_ready(final=True)


async def _final_latest(pipeline: Pipeline) -> None:
    if pipeline.parts.writer is None or pipeline.learned_here == 0:  # nothing new since the last `latest`
        return
    if pipeline.learner_failed:
        log.warning("final_checkpoint_skipped", reason="the learner failed during a step",
                    last_step=pipeline.progress.last_step)
        return
    async with pipeline.policy_lock:
        await pipeline.saves.latest()
