"""One `step` event per training step, and the run's summary.

A step is reported once it is learned and, when a validation round goes with it, once that round
is scored; always in step order, so log tooling reads steps 1, 2, 3... At shutdown a learned step
is reported without waiting for a round that will not come. Each event is also handed to the
metrics endpoint, the progress line and W&B, when they are on.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..collector import StepBatch, Tally, ValidationResult
from ..learning.learner import StepMetrics
from ..ops.log import get_logger
from ..ops.meters import BusyMeter, Window
from ..ops.metrics import RunMetrics
from ..ops.progress import ProgressLine
from ..ops.tracking import WandbSink
from ..policy.device import Device
from .assemble import Parts, Progress

log = get_logger("pipeline")

STEP_HISTORY = 1_000  # steps whose timings the summary keeps

# Learner metrics repeated in the `step` event, so one event tells the whole story of a step.
LEARNER_FIELDS = ("loss", "grad_norm", "ratio_mean", "ratio_max", "clipped_fraction", "logprob_mismatch",
                  "tis_weight_mean", "tis_capped_fraction", "kl", "zero_variance_share", "tokens", "lr")


@dataclass
class Summary:
    steps: int = 0
    tally: Tally = field(default_factory=Tally)
    best_score: float | None = None
    stopped_by: str | None = None
    wall_s: float = 0.0
    stage_busy_s: dict[str, float] = field(default_factory=dict)
    # the most recent steps' wall time and busy fractions per stage (for `bench pipeline`);
    # bounded, so a run of many epochs does not grow them without end
    step_times: deque[float] = field(default_factory=lambda: deque(maxlen=STEP_HISTORY))
    step_busy: deque[dict[str, float]] = field(default_factory=lambda: deque(maxlen=STEP_HISTORY))
    # how long before its sampling ended each step's judging could start (offers stream)
    judge_head_start_s: deque[float] = field(default_factory=lambda: deque(maxlen=STEP_HISTORY))


@dataclass
class GenerationTiming:
    """When a step's training offers became ready for the judge, from the start of its sampling:
    the first (offers stream to the judge as they end) and the last."""

    started: float = field(default_factory=time.perf_counter)
    first_s: float | None = None
    last_s: float | None = None

    def offer_ready(self) -> None:
        self.last_s = time.perf_counter() - self.started
        if self.first_s is None:
            self.first_s = self.last_s


@dataclass
class _Step:
    """What is known of a step so far; reported once complete."""

    wants_validation: bool = False
    metrics: StepMetrics | None = None
    batch: StepBatch | None = None
    validation: ValidationResult | None = None
    generation: GenerationTiming | None = None


@dataclass
class Observers:
    """Where step events go besides the log; each one optional."""

    metrics: RunMetrics | None = None  # /metrics and /healthz (--metrics-port)
    progress_line: ProgressLine | None = None  # drawn only on a terminal
    tracker: WandbSink | None = None  # when W&B is on
    on_step: Callable[[dict[str, Any]], None] | None = None  # `bench learning` records its curves


class StepReporter:
    def __init__(self, parts: Parts, progress: Progress, judge_busy: BusyMeter,
                 queue_depths: Callable[[], dict[str, int]], observers: Observers) -> None:
        self.parts = parts
        self.progress = progress
        self.judge_busy = judge_busy
        self.queue_depths = queue_depths
        self.observers = observers
        self.steps: dict[int, _Step] = {}
        self.summary = Summary(best_score=progress.best_score)
        device = parts.device
        self.window = Window({"generator": _DeviceMeter(device, "generator"), "judge": judge_busy,
                              "learner": _DeviceMeter(device, "learner"), "device": _DeviceMeter(device)})
        self._judge_calls0 = 0
        self._judge0 = judge_counts(parts.judge.stats)
        self._t_last = time.perf_counter()

    # -- what the stages tell it

    def planned(self, step: int, wants_validation: bool) -> None:
        self.steps[step] = _Step(wants_validation)

    def learned(self, batch: StepBatch, metrics: StepMetrics) -> None:
        report = self.steps.setdefault(batch.step, _Step())
        report.metrics, report.batch = metrics, batch

    def generated(self, step: int, timing: GenerationTiming) -> None:
        self.steps.setdefault(step, _Step()).generation = timing

    def dropped(self, step: int) -> None:
        """A step abandoned at shutdown: never learned, never reported."""
        self.steps.pop(step, None)

    def validated(self, result: ValidationResult) -> None:
        self.steps.setdefault(result.step, _Step(wants_validation=True)).validation = result

    @property
    def waiting(self) -> bool:
        """Whether a learned step is still waiting to be reported (for its validation round)."""
        return any(r.metrics is not None for r in self.steps.values())

    def emit_ready(self, final: bool = False) -> None:
        """Report every complete step in order; `final`: rounds still missing will not come."""
        for step in sorted(self.steps):
            r = self.steps[step]
            if final and r.validation is None:
                r.wants_validation = False
            if r.metrics is None or (r.wants_validation and r.validation is None):
                if final:
                    continue
                break
            del self.steps[step]
            self._emit(step, r)

    # -- the event

    def _emit(self, step: int, r: _Step) -> None:
        assert r.metrics is not None and r.batch is not None
        now = time.perf_counter()
        step_s, self._t_last = now - self._t_last, now
        busy = self.window.lap()
        self.summary.steps += 1
        self.summary.step_times.append(step_s)
        self.summary.step_busy.append(busy)
        fields = {**self._step_fields(step, r), "step_s": round(step_s, 3),
                  "queue_depths": self.queue_depths(),
                  "busy": {k: v for k, v in busy.items() if k != "device"},
                  "device_idle_fraction": round(1.0 - busy["device"], 4),
                  "judge_rpm": self._judge_rpm(step_s), "judge": self._judge_delta()}
        # the judge's share of the step, in seconds, and of the TPM quota it pays for: a judge-bound
        # run that leaves quota unused shows it here (idle at step boundaries, paced after a 429)
        fields["judge_busy_s"] = round(busy["judge"] * step_s, 3)
        fields["judge_tpm_used"] = round(fields["judge"]["tokens"] * 60.0 / max(step_s, 1e-9) / judge_tpm(self.parts.cfg), 4)
        if r.generation is not None and r.generation.first_s is not None:
            # judging of this step started `generation_s - first_offer_s` before its sampling ended
            fields["first_offer_s"] = round(r.generation.first_s, 3)
            fields["generation_s"] = round(r.generation.last_s or 0.0, 3)
            self.summary.judge_head_start_s.append((r.generation.last_s or 0.0) - r.generation.first_s)
        if r.validation is not None:
            fields["validation_score"] = r.validation.score
            fields["validation_trajectories"] = r.validation.tally.as_dict()
            fields["validation_judge_failed_share"] = round(r.validation.judge_failed_share, 4)
            fields["best_score"] = self.progress.best_score
        log.info("step", **fields)
        self._observe(fields)

    @staticmethod
    def _step_fields(step: int, r: _Step) -> dict[str, Any]:
        assert r.metrics is not None and r.batch is not None
        rewards = r.batch.rewards
        return {
            "step": step,
            "epoch": r.batch.plan.epoch,
            "reward_mean": round(statistics.fmean(rewards), 4) if rewards else None,
            "reward_std": round(statistics.pstdev(rewards), 4) if len(rewards) > 1 else 0.0,
            "skipped_groups": r.metrics.skipped_groups,
            "policy_lag": r.metrics.policy_lag_max or 0,
            "trajectories": r.batch.tally.as_dict(),
            "injection_flagged": (flags := r.batch.injection_flags())["offers"],  # offers addressing the judge
            "injection_flags": {k: n for k, n in flags.items() if k != "offers"},
            "policy_version": r.metrics.version,
            **{k: getattr(r.metrics, k) for k in LEARNER_FIELDS},
        }

    def _judge_rpm(self, step_s: float) -> float:
        calls = self.parts.judge.stats.requests
        rpm = (calls - self._judge_calls0) * 60.0 / max(step_s, 1e-9)
        self._judge_calls0 = calls
        return round(rpm, 1)

    def _judge_delta(self) -> dict[str, float]:
        """This step's judging: calls, tokens as charged, 429s, dedup hits, reasoning and cached
        tokens, dollars (deltas of the counters)."""
        now = judge_counts(self.parts.judge.stats)
        delta = {k: now[k] - self._judge0.get(k, 0) for k in now}
        if "usd" in delta:
            delta["usd"] = round(delta["usd"], 6)
        self._judge0 = now
        return delta

    def _observe(self, fields: dict[str, Any]) -> None:
        o = self.observers
        if o.metrics:
            o.metrics.on_step(fields)
            js = self.parts.judge.stats
            o.metrics.on_judge(js.requests, js.tokens, js.http_429, js.failures, js.retries, js.paused,
                               js.reasoning_tokens, js.cached_tokens, js.usd)
            if hasattr(self.parts.judge, "endpoint_stats"):
                o.metrics.on_judge_endpoints(self.parts.judge.endpoint_stats())
        if o.progress_line:
            o.progress_line.update(fields)
        if o.tracker:
            o.tracker.log_step(fields)
        if o.on_step:
            o.on_step(fields)

    # -- the end

    def finish(self, started: float, tally: Tally) -> Summary:
        s = self.summary
        s.wall_s = time.perf_counter() - started
        s.tally = tally
        s.best_score = self.progress.best_score
        device = self.parts.device
        s.stage_busy_s = {"generator": round(device.busy_by["generator"], 3),
                          "judge": round(self.judge_busy.busy_s, 3),
                          "learner": round(device.busy_by["learner"], 3)}
        return s


def judge_tpm(cfg: Any) -> float:
    """The TPM quota the judge is configured for: every endpoint's, or the one's."""
    return float(sum(e.tpm for e in cfg.judge.endpoints) or cfg.judge.tpm)


def judge_counts(stats: Any) -> dict[str, float]:
    """The `judge` object of `step` and `run_summary`: calls sent, tokens charged (prompt + the
    reply budget at intake, corrected from `usage`), HTTP 429s, offers reused from the dedup table,
    reasoning and cached tokens as the server counted them, and dollars when prices are configured."""
    counts: dict[str, float] = {
        "calls": stats.requests, "tokens": round(getattr(stats, "charged_tokens", 0)),
        "http_429": stats.http_429, "dedup_hits": getattr(stats, "dedup_hits", 0),
        "reasoning_tokens": getattr(stats, "reasoning_tokens", 0), "cached_tokens": getattr(stats, "cached_tokens", 0)}
    if getattr(stats, "priced", False):
        counts["usd"] = round(stats.usd, 6)
    return counts


class _DeviceMeter:
    """The device's busy seconds (all of them, or one stage's) as a meter for Window."""

    def __init__(self, device: Device, user: str | None = None) -> None:
        self._device = device
        self._user = user

    @property
    def busy_s(self) -> float:
        return self._device.busy_by[self._user] if self._user else self._device.busy_s
