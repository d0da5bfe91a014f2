"""`jobrl-async run` (the training daemon, jobrl_async.pipeline.daemon) and `jobrl-async bench pipeline`."""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from .. import aio
from ..config import BUNDLED_DATASET, TINY_MODEL, Config
from ..errors import JobrlError
from ..ops import log
from ..ops.phases import PhaseLines
from ..policy.device import configure_threads


def apply_dry_run(cfg: Config) -> Config:
    """Stub judge, embedded tiny model, bundled dataset, local checkpoints: unless named otherwise."""
    return with_defaults(cfg, {
        "judge.mode": "stub",
        "model.name": TINY_MODEL,
        "data.dataset": BUNDLED_DATASET,
        "checkpoints.uri": f"runs/dry-run-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}/checkpoints",
    })


def with_defaults(cfg: Config, defaults: dict[str, Any]) -> Config:
    """A copy of `cfg` with these `section.key` values, except where a file, env or flag named one."""
    cfg = copy.deepcopy(cfg)
    for key, value in defaults.items():
        if not cfg.is_set(key):
            section, _, name = key.partition(".")
            setattr(getattr(cfg, section), name, value)
    return cfg


def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.dry_run:
        cfg = apply_dry_run(cfg)
    phases = PhaseLines() if PhaseLines.wanted(cfg.logging.phases, sys.stderr) else None
    if phases:
        phases.loading(cfg.model.name)  # importing torch (configure_threads) and transformers takes seconds
        log.add_listener(phases)
    configure_threads(cfg.model)  # before torch does any work
    try:
        from ..pipeline.daemon import train

        return aio.run(train(cfg, force=args.force))
    finally:
        if phases:
            log.remove_listener(phases)


# ---------------------------------------------------------------- bench pipeline


def bench(args: argparse.Namespace, cfg: Config) -> int:
    cfg = bench_config(cfg, args)
    configure_threads(cfg.model)
    result = aio.run(_bench(cfg))
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
    import torch

    from ..pipeline import Pipeline, build

    out: dict[str, Any] = {"steps": cfg.pipeline.max_steps, "judge_latency_ms": cfg.judge.stub_latency_ms,
                           "model": cfg.model.name, "validation": bool(cfg.validation.every_steps)}
    for schedule in ("sequential", "pipelined"):
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
    out["judge_head_start_s"] = out["pipelined"]["judge_head_start_s"]
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
        # seconds before a step's sampling ended that its judging could start (offers stream)
        "judge_head_start_s": round(statistics.fmean(head), 3) if (head := list(summary.judge_head_start_s)[1:]) else None,
        "device_busy_fraction": round(stage_s["device"] / wall, 3),
        "trajectories": summary.tally.as_dict(),
        "wall_s": round(wall_s, 2),
    }
