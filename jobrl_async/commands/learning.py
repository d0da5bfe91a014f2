"""`jobrl-async bench learning`: does the overlap cost learning?

Each schedule trains the embedded tiny model with the stub judge (its latency simulated through
the same limiter as `bench pipeline`) once per seed, every run from the same LoRA weights,
validating every step on the same contexts and once more on the final weights. The seeds change
the sampling (`generation.seed`), nothing else; runs are interleaved seed by seed, so a machine
that slows down part-way slows every schedule alike. The maths is in `jobrl_async.report.curves`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .. import aio
from ..config import BUNDLED_DATASET, Config
from ..errors import JobrlError
from ..policy.device import configure_threads
from ..report.curves import BASELINE, Point, RunCurve, summarise
from .pipeline import with_defaults

# schedule -> (the loop it runs, what it changes in the configuration)
SCHEDULES: dict[str, tuple[str, dict[str, Any]]] = {
    "sequential": ("sequential", {}),
    "pipelined": ("pipelined", {"training.max_policy_lag": 1, "training.off_policy_correction": "decoupled"}),
    "pipelined-behaviour": ("pipelined", {"training.max_policy_lag": 1, "training.off_policy_correction": "behaviour"}),
    "pipelined-lag2": ("pipelined", {"training.max_policy_lag": 2, "training.off_policy_correction": "decoupled"}),
}


@dataclass(frozen=True)
class Size:
    steps: int
    seeds: int


# Sized on 2 shared CPU cores (README, "Does the overlap cost learning?"): the default in about
# 30 minutes, --quick in under 10.
DEFAULT, QUICK = Size(steps=16, seeds=3), Size(steps=6, seeds=2)

# The start's and the final weights' rounds (the figures that decide, outside the timed run) draw
# this many times the validation attempts per context: a fourth of the sampling noise's variance.
END_ROUND_ATTEMPTS = 4

# The benchmark's shape, unless the configuration names its own: a learning rate at which the tiny
# model learns within a few dozen steps (the default 2e-5 needs hundreds), a smaller batch, a fixed
# validation subset.
BENCH_DEFAULTS: dict[str, Any] = {
    "training.learning_rate": 5e-3,
    "training.batch_contexts": 8,
    "training.attempts": 8,
    "validation.max_contexts": 24,
    "validation.attempts": 2,
    "generation.max_new_tokens": 192,  # the tiny model's offers end at ~150 tokens: few are cut
}


def bench(args: argparse.Namespace, cfg: Config) -> int:
    schedules = parse_schedules(args.schedules)
    size = QUICK if args.quick else DEFAULT
    steps, seeds = args.steps or size.steps, args.seeds or size.seeds
    if steps < 1 or seeds < 1:
        raise JobrlError(f"bench learning: --steps ({steps}) and --seeds ({seeds}) must be at least 1")
    page = Path(args.output)
    if not page.parent.is_dir():  # said now, not after half an hour of training
        raise JobrlError(f"-o {page}: the folder {page.parent} does not exist")
    cfg = learning_config(cfg, steps, args.judge_latency_ms, args.max_new_tokens)
    configure_threads(cfg.model)
    runs = aio.run(_bench(cfg, schedules, seeds))
    done = runs[BASELINE][0].steps  # fewer than asked when the data's epochs end first
    summary = summarise(runs, steps=done, seeds=seeds, judge_latency_ms=args.judge_latency_ms)
    from ..report.learning import render_learning_html

    try:
        page.write_text(render_learning_html(runs, summary, cfg, end_attempts=END_ROUND_ATTEMPTS))
    except OSError as e:
        raise JobrlError(f"-o {page}: cannot write the page ({e.strerror or e})") from None
    summary["page"] = str(page)
    _print(summary)
    return 0


def parse_schedules(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCHEDULES]
    if unknown:
        raise JobrlError(f"--schedules: unknown {', '.join(unknown)}; choose from {', '.join(SCHEDULES)}")
    if BASELINE not in names:
        raise JobrlError(f"--schedules must include {BASELINE}: every comparison is against it")
    return list(dict.fromkeys(names))


def learning_config(cfg: Config, steps: int, judge_latency_ms: float, max_new_tokens: int | None) -> Config:
    cfg = with_defaults(cfg, {**BENCH_DEFAULTS, "model.name": "tiny"})
    cfg.judge.mode = "stub"
    cfg.judge.stub_latency_ms = judge_latency_ms
    cfg.judge.rpm = cfg.judge.tpm = 10_000_000  # the quota is not what this benchmark measures
    cfg.data.dataset = BUNDLED_DATASET
    cfg.pipeline.max_steps = steps
    cfg.pipeline.resume = False
    cfg.validation.every_steps = 1
    cfg.checkpoints.latest_every_steps = 0
    if max_new_tokens:
        cfg.generation.max_new_tokens = max_new_tokens
    return cfg


def schedule_config(cfg: Config, schedule: str, seed: int) -> Config:
    changes = {**SCHEDULES[schedule][1], "generation.seed": cfg.generation.seed + seed}
    run_cfg = copy.deepcopy(cfg)
    for key, value in changes.items():
        section, _, name = key.partition(".")
        setattr(getattr(run_cfg, section), name, value)
    return run_cfg


async def _bench(cfg: Config, schedules: list[str], seeds: int) -> dict[str, list[RunCurve]]:
    runs: dict[str, list[RunCurve]] = {s: [] for s in schedules}
    for seed in range(seeds):
        for schedule in schedules:
            curve = await _one_run(schedule_config(cfg, schedule, seed), schedule, seed)
            runs[schedule].append(curve)
            _print(run_line(curve))
    return runs


async def _one_run(cfg: Config, schedule: str, seed: int) -> RunCurve:
    import torch

    from ..pipeline import Observers, Pipeline, build
    from ..pipeline.validation import score_round
    from ..pipeline.work import validation_contexts

    torch.manual_seed(cfg.training.seed)  # every run starts from the same LoRA weights
    with tempfile.TemporaryDirectory() as tmp:
        parts, progress, total = await build(cfg, Path(tmp), checkpoints=False)
    recorder = StepRecorder()
    pipeline = Pipeline(parts, progress, asyncio.Event(), total, Observers(on_step=recorder))
    contexts = validation_contexts(cfg, parts.validation)
    # the start's and the final weights' rounds, outside the timed run: every schedule is measured
    # on the same weights first (identical scores) and after the same number of steps
    ends = copy.deepcopy(cfg)
    ends.validation.attempts *= END_ROUND_ATTEMPTS
    try:
        first = await score_round(ends, parts.generator, parts.judge, contexts, 0)
        recorder.start()
        await (pipeline.run_sequential() if SCHEDULES[schedule][0] == "sequential" else pipeline.run())
        wall_s = time.perf_counter() - recorder.t0
        final = await score_round(ends, parts.generator, parts.judge, contexts, total + 1)
    finally:
        await parts.judge.aclose()
    if first.score is None or final.score is None:
        raise JobrlError(f"bench learning: {schedule} seed {seed}: the judge scored no validation offer")
    points = (Point(0, 0.0, first.score), *recorder.points, Point(total, wall_s, final.score))
    return RunCurve(schedule, seed, points, tuple(recorder.rewards), wall_s, total)


class StepRecorder:
    """A run's `step` events: each validation round's score with the seconds since the start.

    The round logged with step k sampled before step k was learned: k - 1 steps done (in a
    pipelined run possibly one older, while step k - 1 was still being learned). Round 1's weights
    are the start's, measured before the run: it is left out."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.points: list[Point] = []
        self.rewards: list[float] = []

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, fields: dict[str, Any]) -> None:
        t = time.perf_counter() - self.t0
        if fields.get("reward_mean") is not None:
            self.rewards.append(fields["reward_mean"])
        if fields.get("validation_score") is not None and fields["step"] > 1:
            self.points.append(Point(fields["step"] - 1, t, fields["validation_score"]))


def run_line(curve: RunCurve) -> dict[str, Any]:
    return {
        "schedule": curve.schedule, "seed": curve.seed, "steps": curve.steps,
        "wall_s": round(curve.wall_s, 2), "s_per_step": round(curve.wall_s / curve.steps, 3),
        "validation_first": round(curve.first, 4), "validation_final": round(curve.final, 4),
        "reward_last5": None if curve.reward_last is None else round(curve.reward_last, 4),
        "validation": [[p.steps_done, round(p.t_s, 2), round(p.score, 4)] for p in curve.points],
    }


def _print(obj: dict[str, Any]) -> None:
    sys.stdout.flush()  # after the log lines already written
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
    sys.stdout.buffer.flush()
