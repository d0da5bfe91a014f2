"""Winding a run down: what is left is counted as dropped, the last learned step is saved, the
uploads finish. After a clean stop and after a stage crashed alike: nothing paid for is lost.

The final `latest` holds the weights and the progress of the same step: the learner stage never
starts a step once stopping, and a step it had started is learned and recorded first (stages.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..log import get_logger

if TYPE_CHECKING:
    from .stages import Pipeline

log = get_logger("pipeline")


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
