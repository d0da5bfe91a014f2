"""`jobrl-async run` (the training daemon) and `jobrl-async bench pipeline`."""

from __future__ import annotations

import argparse
import asyncio
import copy
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from ..config import BUNDLED_DATASET, TINY_MODEL, Config, Secrets
from ..device import configure_threads
from ..errors import JobrlError
from ..log import get_logger

log = get_logger("run")

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def apply_dry_run(cfg: Config) -> Config:
    """Stub judge, embedded tiny model, bundled dataset, local checkpoints: unless named otherwise."""
    cfg = copy.deepcopy(cfg)
    defaults = {
        "judge.mode": "stub",
        "model.name": TINY_MODEL,
        "data.dataset": BUNDLED_DATASET,
        "checkpoints.uri": f"runs/dry-run-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}/checkpoints",
    }
    for key, value in defaults.items():
        if not cfg.is_set(key):
            section, _, name = key.partition(".")
            setattr(getattr(cfg, section), name, value)
    return cfg


def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.dry_run:
        cfg = apply_dry_run(cfg)
    configure_threads(cfg.model)  # before torch does any work
    return _run_loop(_train(cfg, force=args.force))


def _run_loop(main: Any) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def _train(cfg: Config, force: bool = False) -> int:
    from ..pipeline import Pipeline

    from ..metrics import RunMetrics, serve_metrics
    from ..producer import steps_per_epoch
    from ..progress import ProgressLine
    from ..tracking import WandbSink

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
        pipeline = Pipeline(parts, progress, stop, total, metrics=metrics, progress_line=line, tracker=tracker)
        log.info("run_started", schedule=cfg.pipeline.schedule, model=cfg.model.name, judge=cfg.judge.mode,
                 dataset=cfg.data.dataset, checkpoints=cfg.checkpoints.uri, start_step=progress.next_step,
                 total_steps=total, device=parts.device.name, train=len(parts.train),
                 validation=len(parts.validation))
        stopped_by: str | None = None
        try:
            if cfg.pipeline.schedule == "sequential":
                await pipeline.run_sequential()
            else:
                await pipeline.run()
        except BaseExceptionGroup as group:
            _log_summary(pipeline, "crash")
            raise _first_error(group) from None
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
    _log_summary(pipeline, stopped_by or (sig.name if sig else None))
    return SIGNAL_EXIT[sig] if sig else 0


def _log_summary(pipeline: Any, stopped_by: str | None) -> None:
    """`run_summary`: totals of the run, also after a crash or a forced stop."""
    s = pipeline.summary
    log.info("run_summary", steps=s.steps, last_step=pipeline.progress.last_step,
             trajectories=pipeline.collector.tally.as_dict(), best_validation_score=s.best_score,
             wall_s=round(s.wall_s, 2), device_busy_s=round(pipeline.p.device.busy_s, 2),
             stage_busy_s=s.stage_busy_s, stopped_by=stopped_by)


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


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The exception that made the TaskGroup fail: a user error as it is, a bug as one line."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if isinstance(exc, JobrlError):
            return exc
        if not isinstance(exc, asyncio.CancelledError):
            log.error("stage_crashed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            return StageCrashed(f"a stage crashed: {type(exc).__name__}: {exc} (traceback in the log)")
    return group.exceptions[0]


class StageCrashed(JobrlError):
    kind = "crash"


async def build(cfg: Config, workdir: Path, *, checkpoints: bool = True,
                on_checkpoint: Any = None, force: bool = False) -> tuple[Any, Any, int]:
    """Load data, check the judge and the checkpoint location, load the policy, resume if asked."""
    import anyio.to_thread

    from ..checkpoints import CheckpointWriter, preflight
    from ..data import check_against_policy, load_dataset, split_dataset
    from ..device import Device, resolve_device
    from ..judge.stage import Judge
    from ..learner import Learner
    from ..lease import acquire_lease
    from ..model import load_policy
    from ..pipeline import Parts, Progress
    from ..producer import total_steps

    dataset = await load_dataset(cfg.data.dataset, cfg.storage, cfg.data.max_records)
    split = split_dataset(dataset.contexts, cfg.data.validation_fraction, cfg.data.seed)
    total = total_steps(len(split.train), cfg.training.batch_contexts, cfg.training.epochs, cfg.pipeline.max_steps)
    if total == 0:
        raise JobrlError(f"{dataset.source}: {len(split.train)} training contexts make no full batch of "
                         f"training.batch_contexts={cfg.training.batch_contexts}")
    lease = None
    if checkpoints:
        await preflight(cfg.checkpoints.uri, cfg)
        # one run per checkpoints URI, held before anything there is read; the writer renews and releases it
        lease = await acquire_lease(cfg, force=force)
    judge = None
    try:
        judge = Judge(cfg, Secrets.from_env())
        if cfg.judge.mode != "stub":
            await judge.preflight()  # a round trip before any GPU time; a judge still down starts paused
        device = Device(resolve_device(cfg.model.device))
        policy = await anyio.to_thread.run_sync(load_policy, cfg, device.name)
        await anyio.to_thread.run_sync(check_against_policy, dataset, policy)  # its own special tokens
        generator, adapter_root = await _generator(cfg, policy, device, workdir)
        learner = Learner(policy, device, cfg.training, total, temperature=cfg.generation.temperature)
        writer = CheckpointWriter(cfg.checkpoints.uri, cfg, on_result=on_checkpoint, lease=lease) if checkpoints else None
        progress = Progress()
        if checkpoints and cfg.pipeline.resume:
            progress = await resume(cfg, policy, learner, workdir) or Progress(best_score=await best_on_record(cfg))
    except BaseException:  # nothing started is left behind: the judge's probe, the lease
        if judge is not None:
            await judge.aclose()
        if lease is not None:
            await lease.aclose()
        raise
    parts = Parts(cfg, policy, device, generator, judge, learner, writer, split.train, split.validation,
                  adapter_root)
    return parts, progress, total


async def _generator(cfg: Config, policy: Any, device: Any, workdir: Path) -> tuple[Any, Path | None]:
    """The in-process generator, or vLLM servers (checked before any step) and their adapter folder."""
    from ..generator import LocalGenerator

    if cfg.generator.backend == "local":
        return LocalGenerator(policy, device, cfg.generation), None
    from ..remote import RemoteGenerator, RemoteOptions

    g = cfg.generator
    root = Path(g.adapter_root) if g.adapter_root else workdir / "adapters"
    options = RemoteOptions(
        urls=tuple(g.urls), model=g.model or cfg.model.name, max_concurrency=g.max_concurrency,
        timeout_s=g.timeout_s, max_retries=g.max_retries, backoff_max_s=g.backoff_max_s,
        adapter_root=str(root), server_adapter_root=g.server_adapter_root, unload_stale=g.unload_stale,
    )
    remote = RemoteGenerator.for_policy(policy, cfg.generation, options, api_key=Secrets.from_env().vllm_api_key)
    await remote.check()
    return remote, root


async def resume(cfg: Config, policy: Any, learner: Any, workdir: Path) -> Any:
    from ..checkpoints import find_latest, load_checkpoint, restore_rng
    from ..model import load_adapter_state
    from ..pipeline import Progress

    uri = await find_latest(cfg.checkpoints.uri, cfg)
    if uri is None:
        return None
    loaded = await load_checkpoint(uri, cfg, workdir / "resume")
    load_adapter_state(policy, loaded.adapter)
    if loaded.learner_state is not None:
        learner.load_state_dict(loaded.learner_state)
    restore_rng(loaded.trainer.rng)
    t = loaded.trainer
    policy.version = t.policy_version
    # A best written after this latest (then a crash) must not be beaten by a worse one later.
    recorded = await best_on_record(cfg)
    best = max((s for s in (t.best_score, recorded) if s is not None), default=None)
    if t.config_digest != cfg.digest():
        log.warning("resume_config_changed", checkpoint=uri, was=t.config_digest, now=cfg.digest())
    log.info("resumed", step=t.step, uri=uri, best_score=best, policy_version=t.policy_version)
    return Progress(next_step=t.step + 1, best_score=best, last_step=t.step,
                    last_epoch=t.epoch, last_position=t.position - 1)


async def best_on_record(cfg: Config) -> float | None:
    """The score `best.json` holds: a new best must beat it, with or without a `latest`."""
    from ..checkpoints import read_pointer
    from ..errors import CheckpointError
    from ..storage import open_store

    try:
        async with open_store(cfg.checkpoints.uri, cfg.storage) as store:
            pointer = await read_pointer(store, "best")
    except CheckpointError as e:  # unreadable: as if there were none, said once
        log.warning("checkpoint_invalid", uri=cfg.checkpoints.uri, reason=str(e))
        return None
    return pointer.validation_score if pointer else None


# ---------------------------------------------------------------- bench pipeline


def bench(args: argparse.Namespace, cfg: Config) -> int:
    cfg = bench_config(cfg, args)
    configure_threads(cfg.model)
    result = _run_loop(_bench(cfg))
    sys.stdout.flush()
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0


def bench_config(cfg: Config, args: argparse.Namespace) -> Config:
    cfg = copy.deepcopy(cfg)
    cfg.model.name = args.model
    cfg.judge.mode = "stub"
    cfg.judge.stub_latency_ms = args.judge_latency_ms
    cfg.judge.max_concurrency = args.judge_concurrency
    cfg.judge.rpm = cfg.judge.tpm = 10_000_000  # the quota is not what this benchmark measures
    cfg.generation.max_new_tokens = args.max_new_tokens
    cfg.pipeline.max_steps = args.steps
    cfg.pipeline.resume = False
    cfg.data.dataset = BUNDLED_DATASET
    if args.no_validation:
        cfg.validation.every_steps = 0
    return cfg


async def _bench(cfg: Config) -> dict[str, Any]:
    from ..pipeline import Pipeline

    out: dict[str, Any] = {"steps": cfg.pipeline.max_steps, "judge_latency_ms": cfg.judge.stub_latency_ms,
                           "model": cfg.model.name, "validation": bool(cfg.validation.every_steps)}
    for schedule in ("sequential", "pipelined"):
        import torch

        torch.manual_seed(cfg.training.seed)  # both runs start from the same LoRA weights
        with tempfile.TemporaryDirectory() as tmp:
            parts, progress, total = await build(cfg, Path(tmp), checkpoints=False)
        pipeline = Pipeline(parts, progress, asyncio.Event(), total)
        t0 = time.perf_counter()
        summary = await (pipeline.run_sequential() if schedule == "sequential" else pipeline.run())
        await parts.judge.aclose()
        out[schedule] = _steady_state(summary, time.perf_counter() - t0)
        out["device"] = parts.device.name
    out["speedup"] = round(out["sequential"]["s_per_step"] / out["pipelined"]["s_per_step"], 3)
    out["overlap_efficiency"] = out["pipelined"]["overlap_efficiency"]
    out["device_busy_fraction"] = out["pipelined"]["device_busy_fraction"]
    return out


def _steady_state(summary: Any, wall_s: float) -> dict[str, Any]:
    """Figures over the steps after the first (the first pays for start-up and an empty pipeline)."""
    times, busy = list(summary.step_times)[1:], list(summary.step_busy)[1:]
    if not times:
        raise JobrlError("bench pipeline needs --steps >= 2 (the first step is excluded)")
    wall = sum(times)
    stage_s = {name: sum(b[name] * t for b, t in zip(busy, times)) for name in busy[0]}
    busiest = max(stage_s["device"], stage_s["judge"])
    return {
        "s_per_step": round(wall / len(times), 3),
        "step_s": [round(t, 3) for t in summary.step_times],
        "stage_busy_s": {k: round(v, 3) for k, v in stage_s.items()},
        "overlap_efficiency": round(wall / busiest, 3) if busiest else None,
        "device_busy_fraction": round(stage_s["device"] / wall, 3),
        "trajectories": summary.tally.as_dict(),
        "wall_s": round(wall_s, 2),
    }
