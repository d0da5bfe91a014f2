"""The training daemon behind `jobrl-async run`: signals, the metrics endpoint, the run, its
summary and exit code.

First SIGINT/SIGTERM: intake stops and the run winds down within `pipeline.shutdown_grace_s`
(exit 130/143); a second: stop now. A stage's user error ends the run with its own one line, a
bug with one line (traceback in the log); `run_summary` is logged in every case.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

from ..aio import leaf_errors
from ..config import Config, Secrets
from ..errors import JobrlError
from ..ops.log import get_logger
from ..ops.metrics import RunMetrics, serve_metrics
from ..ops.progress import ProgressLine
from ..ops.tracking import WandbSink
from ..producer import steps_per_epoch
from ..report.keeper import ReportKeeper, report_uri
from .assemble import build
from .reporting import Observers, judge_counts
from .stages import Pipeline

log = get_logger("run")

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StageCrashed(JobrlError):
    kind = "crash"


async def train(cfg: Config, force: bool = False) -> int:
    keeper = ReportKeeper.for_run(cfg)  # report.html beside the checkpoints, from the run's own events
    if keeper is None:
        return await _train(cfg, force)
    keeper.start()  # before `build`, which logs `resumed`
    try:
        return await _train(cfg, force)
    finally:
        await keeper.aclose()  # after `run_summary`, whatever ended the run


async def _train(cfg: Config, force: bool) -> int:
    stop = asyncio.Event()
    signals = _install_signal_handlers(stop)
    metrics = RunMetrics(cfg.metrics.stall_timeout_s)
    server = await serve_metrics(metrics, cfg.metrics.host, cfg.metrics.port) if cfg.metrics.port else None
    if server:
        log.info("metrics_serving", url=f"http://{server.host}:{server.port}/metrics")
    with tempfile.TemporaryDirectory(prefix="jobrl-") as tmp:
        parts, progress, total = await build(cfg, Path(tmp), on_checkpoint=metrics.on_checkpoint, force=force)
        line = ProgressLine(total, steps_per_epoch=steps_per_epoch(len(parts.train), cfg.training.batch_contexts),
                            epochs=cfg.training.epochs)
        tracker = WandbSink.start(cfg, Secrets.from_env())
        pipeline = Pipeline(parts, progress, stop, total, Observers(metrics, line, tracker))
        log.info("run_started", schedule=cfg.pipeline.schedule, model=cfg.model.name, judge=cfg.judge.mode,
                 dataset=cfg.data.dataset, checkpoints=cfg.checkpoints.uri, start_step=progress.next_step,
                 total_steps=total, device=parts.device.name, train=len(parts.train),
                 validation=len(parts.validation), config_digest=cfg.digest(),
                 epochs=cfg.training.epochs, batch_contexts=cfg.training.batch_contexts,
                 attempts=cfg.training.attempts,
                 max_policy_lag=cfg.training.max_policy_lag, judge_rpm=cfg.judge.rpm, judge_tpm=cfg.judge.tpm,
                 report=report_uri(cfg))
        stopped_by: str | None = None
        try:
            await (pipeline.run_sequential() if cfg.pipeline.schedule == "sequential" else pipeline.run())
        except BaseExceptionGroup as group:
            log_run_summary(pipeline, "crash")
            raise _user_facing(group) from None
        except asyncio.CancelledError:  # a second signal: stop now, without the grace
            if "signal" not in signals:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            stopped_by = "forced"
        finally:
            line.close()
            if tracker:
                tracker.finish()
            await parts.judge.aclose()
            if hasattr(parts.generator, "aclose"):
                await parts.generator.aclose()
            if server:
                await server.aclose()
    sig = signals.get("signal")
    log_run_summary(pipeline, stopped_by or (sig.name if sig else None))
    return SIGNAL_EXIT[sig] if sig else 0


def log_run_summary(pipeline: Pipeline, stopped_by: str | None) -> None:
    """`run_summary`: totals of the run, also after a crash or a forced stop."""
    s = pipeline.summary
    log.info("run_summary", steps=s.steps, last_step=pipeline.progress.last_step,
             trajectories=pipeline.collector.tally.as_dict(),
             training_trajectories=pipeline.collector.learning.as_dict(), best_validation_score=s.best_score,
             wall_s=round(s.wall_s, 2), device_busy_s=round(pipeline.parts.device.busy_s, 2),
             stage_busy_s=s.stage_busy_s, judge=judge_counts(pipeline.parts.judge.stats), stopped_by=stopped_by)


def _install_signal_handlers(stop: asyncio.Event) -> dict[str, signal.Signals]:
    """First SIGINT/SIGTERM: stop intake and shut down within the grace. Second: stop now."""
    loop = asyncio.get_running_loop()
    seen: dict[str, signal.Signals] = {}
    main = asyncio.current_task()

    def on_signal(sig: signal.Signals) -> None:
        if "signal" in seen and main is not None:
            log.warning("shutdown_forced", signal=sig.name)
            main.cancel()
            return
        seen["signal"] = sig
        log.info("shutdown_requested", signal=sig.name)
        stop.set()

    for sig in SIGNAL_EXIT:
        loop.add_signal_handler(sig, on_signal, sig)
    return seen


def _user_facing(group: BaseExceptionGroup) -> BaseException:
    """The error that ended the run: a user error as it is, a bug as one line (traceback logged)."""
    errors = leaf_errors(group)
    if not errors:
        return group.exceptions[0]
    first = errors[0]
    if isinstance(first, JobrlError):
        return first
    log.error("stage_crashed", error=f"{type(first).__name__}: {first}", exc_info=first)
    return StageCrashed(f"a stage crashed: {type(first).__name__}: {first} (traceback in the log)")
