"""Learning curves of `bench learning`, and the figures it prints: pure, no I/O.

A run is one training of one schedule from one seed; its curve is the validation score of each
round against the training steps done before the round sampled, and against the seconds since
the run started when the score was known. Rounds of one schedule are averaged over seeds point by
point; the spread is the sample standard deviation over seeds.

    pooled sd     sqrt(((n1 - 1) s1² + (n2 - 1) s2²) / (n1 + n2 - 2))
    final gap     (pipelined final mean - sequential final mean) / pooled sd of the finals
    time to target  the first second the mean curve reaches the target, linear between rounds
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BASELINE = "sequential"
LAST_REWARDS = 5  # `reward_last5_mean`: the training reward of the last five steps


@dataclass(frozen=True)
class Point:
    """One validation round of a run."""

    steps_done: int  # training steps learned before the round sampled (pipelined: at most)
    t_s: float  # seconds since the run started, when the score was known
    score: float


@dataclass(frozen=True)
class RunCurve:
    """One run: its rounds in order, the last one on the final weights."""

    schedule: str
    seed: int
    points: tuple[Point, ...]
    rewards: tuple[float, ...]  # each step's mean training reward
    wall_s: float
    steps: int

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise ValueError(f"{self.schedule} seed {self.seed}: a run needs a first and a final validation score")
        if self.steps < 1 or self.wall_s <= 0:
            raise ValueError(f"{self.schedule} seed {self.seed}: steps {self.steps}, wall {self.wall_s} s")

    @property
    def first(self) -> float:
        return self.points[0].score

    @property
    def final(self) -> float:
        return self.points[-1].score

    @property
    def reward_last(self) -> float | None:
        return mean(self.rewards[-LAST_REWARDS:])


@dataclass(frozen=True)
class MeanPoint:
    """A point of a schedule's mean curve: the runs' rounds with the same steps done."""

    steps_done: int
    t_s: float  # mean over the runs
    mean: float
    sd: float | None  # None for a single run
    runs: int


def mean(xs: Iterable[float]) -> float | None:
    values = list(xs)
    return statistics.fmean(values) if values else None


def sd(xs: Iterable[float]) -> float | None:
    """The sample standard deviation (n - 1); None below two values."""
    values = list(xs)
    return statistics.stdev(values) if len(values) > 1 else None


def pooled_sd(a: Sequence[float], b: Sequence[float]) -> float | None:
    """The pooled sample standard deviation of two groups; None without a degree of freedom."""
    dof = len(a) + len(b) - 2
    if dof < 1:
        return None
    squares = sum((len(g) - 1) * statistics.variance(g) for g in (a, b) if len(g) > 1)
    return math.sqrt(squares / dof)


def mean_curve(runs: Sequence[RunCurve]) -> list[MeanPoint]:
    by_steps: dict[int, list[Point]] = {}
    for run in runs:
        for p in run.points:
            by_steps.setdefault(p.steps_done, []).append(p)
    return [MeanPoint(k, statistics.fmean(p.t_s for p in ps), statistics.fmean(p.score for p in ps),
                      sd(p.score for p in ps), len(ps))
            for k, ps in sorted(by_steps.items())]


def mean_rewards(runs: Sequence[RunCurve]) -> list[tuple[int, float, float | None]]:
    """(step, mean, sd) of the training reward over the runs, step by step (from 1)."""
    longest = max((len(r.rewards) for r in runs), default=0)
    out = []
    for i in range(longest):
        values = [r.rewards[i] for r in runs if i < len(r.rewards)]
        out.append((i + 1, statistics.fmean(values), sd(values)))
    return out


def time_to_target(curve: Sequence[tuple[float, float]], target: float) -> float | None:
    """The first time (seconds) a curve of (t, score) reaches `target`, linear between points;
    None if it never does."""
    previous: tuple[float, float] | None = None
    for t, score in curve:
        if score >= target:
            if previous is None or previous[1] >= target:
                return t
            t0, s0 = previous
            return t0 + (t - t0) * (target - s0) / (score - s0)
        previous = (t, score)
    return None


def schedule_figures(runs: Sequence[RunCurve]) -> dict[str, float | None]:
    """A schedule's figures over its runs (the contract's keys)."""
    return {
        "validation_first_mean": _r(mean(r.first for r in runs)),
        "validation_final_mean": _r(mean(r.final for r in runs)),
        "validation_final_sd": _r(sd(r.final for r in runs)),
        "reward_last5_mean": _r(mean(x for r in runs if (x := r.reward_last) is not None)),
        "wall_s_mean": _r(mean(r.wall_s for r in runs), 2),
        "s_per_step_mean": _r(mean(r.wall_s / r.steps for r in runs), 3),
    }


def compare(runs: Sequence[RunCurve], baseline: Sequence[RunCurve]) -> dict[str, float | None]:
    """A schedule against the baseline: wall-clock speed-up and the final scores' gap in pooled sds."""
    wall, base_wall = mean(r.wall_s for r in runs), mean(r.wall_s for r in baseline)
    finals, base_finals = [r.final for r in runs], [r.final for r in baseline]
    spread = pooled_sd(finals, base_finals)
    gap = statistics.fmean(finals) - statistics.fmean(base_finals)
    return {
        "speedup_wall": _r(base_wall / wall, 3) if wall and base_wall else None,
        "final_gap_in_sd": _r(gap / spread, 3) if spread else None,
    }


def summarise(runs: dict[str, list[RunCurve]], *, steps: int, seeds: int, judge_latency_ms: float) -> dict:
    """The summary object `bench learning` prints last; `runs` by schedule, the baseline among them."""
    if BASELINE not in runs:
        raise ValueError(f"the schedules must include {BASELINE!r}: every comparison is against it")
    base = runs[BASELINE]
    target = statistics.fmean(r.final for r in base)
    out: dict = {"steps": steps, "seeds": seeds, "judge_latency_ms": judge_latency_ms}
    for schedule, group in runs.items():
        out[schedule] = schedule_figures(group)
        if schedule != BASELINE:
            out[schedule].update(compare(group, base))
    headline = out.get("pipelined") or next((out[s] for s in runs if s != BASELINE), {})
    out["speedup_wall"] = headline.get("speedup_wall")
    out["final_gap_in_sd"] = headline.get("final_gap_in_sd")
    out["time_to_sequential_final_s"] = {
        schedule: _r(time_to_target([(p.t_s, p.mean) for p in mean_curve(group)], target), 2)
        for schedule, group in runs.items()
    }
    return out


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)
