"""Prometheus metrics and a liveness check for one run, served over HTTP on the event loop.

    RunMetrics            the run's metrics on its own CollectorRegistry; fed by the pipeline
    serve_metrics(...)    GET /metrics (Prometheus text format) and GET /healthz (JSON)

The endpoint is a small aiohttp app rather than prometheus-client's `start_http_server`: that one
runs in a thread, answers every path with the metrics and every method alike, and has no health
route. Here the routes are exactly two, anything else is 404, any method but GET is 405, nothing
is written, request heads are bounded, and the server lives and dies with the run's event loop.
It binds 127.0.0.1 unless told otherwise and serves counts only: no config, no secrets.

`/healthz` turns 503 when nothing has progressed (no trajectory scored, no step learned) for
`metrics.stall_timeout_s`, so a liveness probe restarts a run whose judge or device hangs; the
restarted run resumes from the latest checkpoint. It turns 503 too while checkpoint writes fail
persistently (the writer says when: `checkpoints.max_attempts` failures in a row), until one
succeeds: a run that cannot save its progress is not healthy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ..errors import ConfigError

# Steps take seconds (tiny model, stub judge) to minutes (a real judge quota).
STEP_SECONDS_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
TRAJECTORY_OUTCOMES = ("scored", "judge_failed", "dropped")
CHECKPOINTS_FAILING = "checkpoint writes failing"
# The judge client's counters, as `on_judge` receives them (cumulative since the client started).
JUDGE_COUNTERS = {
    "requests": ("jobrl_judge_requests", "Judge HTTP requests"),
    "tokens": ("jobrl_judge_tokens", "Judge tokens used (prompt + completion)"),
    "http_429": ("jobrl_judge_http_429", "Judge responses with HTTP 429"),
    "failures": ("jobrl_judge_failures", "Judge calls that failed after their retries"),
    "retries": ("jobrl_judge_retries", "Judge calls retried"),
    "reasoning_tokens": ("jobrl_judge_reasoning_tokens", "Judge reasoning tokens (part of the completion tokens)"),
    "cached_tokens": ("jobrl_judge_cached_tokens", "Judge prompt tokens served from the prompt cache"),
    "usd": ("jobrl_judge_usd", "Judge cost in US dollars at the configured prices (0 when none)"),
}

# Per endpoint of a judge pool (label `endpoint`): the same counters plus the tokens charged.
ENDPOINT_COUNTERS = {
    "requests": ("jobrl_judge_requests", "Judge HTTP requests"),
    "charged_tokens": ("jobrl_judge_tokens_charged", "Judge tokens charged (prompt + max_tokens)"),
    "http_429": ("jobrl_judge_http_429", "Judge responses with HTTP 429"),
    "retries": ("jobrl_judge_retries", "Judge calls retried"),
}


class RunMetrics:
    """The run's metrics and its heartbeat. Call from the event loop's thread only."""

    def __init__(self, stall_timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_timeout_s = stall_timeout_s
        self._clock = clock
        self._last_progress = clock()
        self._judge_seen = dict.fromkeys(JUDGE_COUNTERS, 0)
        self._judge_paused = False  # a plain copy of the gauge, for the health reason
        self._checkpoints_failing: str | None = None  # why checkpoint writes keep failing, if they do
        self._best: float | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self._build()

    def _build(self) -> None:
        r = self.registry
        self.steps = Counter("jobrl_steps", "Training steps reported (learned or all groups skipped)", registry=r)
        self.step = Gauge("jobrl_step", "Last training step reported", registry=r)
        self.epoch = Gauge("jobrl_epoch", "Epoch of the last training step", registry=r)
        self.reward_mean = Gauge("jobrl_reward_mean", "Mean reward of the last step's scored trajectories", registry=r)
        self.reward_std = Gauge("jobrl_reward_std", "Standard deviation of the last step's rewards", registry=r)
        self.validation_score = Gauge("jobrl_validation_score", "Last validation score", registry=r)
        self.validation_best = Gauge("jobrl_validation_best_score", "Best validation score so far", registry=r)
        self.loss = Gauge("jobrl_loss", "Loss of the last learner step", registry=r)
        self.policy_lag = Gauge("jobrl_policy_lag_steps", "Policy lag of the last step's trajectories", registry=r)
        self.skipped_groups = Counter("jobrl_skipped_groups", "Groups without GRPO signal, not trained on",
                                      registry=r)
        self.step_seconds = Histogram("jobrl_step_seconds", "Wall time between two step reports",
                                      buckets=STEP_SECONDS_BUCKETS, registry=r)
        self.trajectories = Counter("jobrl_trajectories", "Trajectories by outcome", ["outcome"], registry=r)
        self.injection_flagged = Counter("jobrl_injection_flagged_offers",
                                         "Training offers flagged as addressing the judge (prompt injection)", registry=r)
        self.queue_depth = Gauge("jobrl_queue_depth", "Items waiting in a pipeline queue", ["queue"], registry=r)
        self.stage_busy = Gauge("jobrl_stage_busy_fraction", "Share of the last step's wall time a stage worked",
                                ["stage"], registry=r)
        self.device_idle = Gauge("jobrl_device_idle_fraction", "Share of the last step's wall time the device idled",
                                 registry=r)
        self.judge_rpm = Gauge("jobrl_judge_rpm", "Judge requests per minute over the last step", registry=r)
        self.judge = {key: Counter(name, doc, registry=r) for key, (name, doc) in JUDGE_COUNTERS.items()}
        self.judge_paused = Gauge("jobrl_judge_paused", "1 while judge intake is paused by the breaker",
                                        registry=r)
        self.judge_endpoint = {key: Counter(f"{name}_by_endpoint", f"{doc}, per endpoint of the pool", ["endpoint"],
                                            registry=r) for key, (name, doc) in ENDPOINT_COUNTERS.items()}
        self.judge_endpoint_paused = Gauge("jobrl_judge_endpoint_paused", "1 while this judge endpoint is paused",
                                           ["endpoint"], registry=r)
        self.judge_endpoint_removed = Gauge("jobrl_judge_endpoint_removed",
                                            "1 once this judge endpoint is out for good (key or deployment refused)",
                                            ["endpoint"], registry=r)
        self._endpoint_seen: dict[tuple[str, str], float] = {}
        self.checkpoint_uploads = Counter("jobrl_checkpoint_uploads", "Checkpoint uploads by kind and result",
                                          ["kind", "result"], registry=r)
        since = Gauge("jobrl_seconds_since_progress", "Seconds since a trajectory was scored or a step learned",
                      registry=r)
        since.set_function(self._idle_s)
        Gauge("jobrl_stall_timeout_seconds", "Idle time after which /healthz reports stalled",
              registry=r).set(self.stall_timeout_s)
        for outcome in TRAJECTORY_OUTCOMES:  # present at 0 from the start, so rate() works at once
            self.trajectories.labels(outcome=outcome)

    # ------------------------------------------------------------------ events

    def on_step(self, fields: dict[str, Any]) -> None:
        """One `step` log event's fields (see DESIGN.md); a step reported is progress."""
        self.steps.inc()
        self.step.set(fields["step"])
        _set_if_number(self.epoch, fields.get("epoch"))
        _set_if_number(self.reward_mean, fields.get("reward_mean"))
        _set_if_number(self.reward_std, fields.get("reward_std"))
        _set_if_number(self.loss, fields.get("loss"))
        _set_if_number(self.policy_lag, fields.get("policy_lag"))
        _set_if_number(self.device_idle, fields.get("device_idle_fraction"))
        _set_if_number(self.judge_rpm, fields.get("judge_rpm"))
        self._on_validation(fields.get("validation_score"), fields.get("best_score"))
        self.skipped_groups.inc(max(0, fields.get("skipped_groups") or 0))
        self.injection_flagged.inc(max(0, fields.get("injection_flagged") or 0))
        if isinstance(fields.get("step_s"), (int, float)):
            self.step_seconds.observe(fields["step_s"])
        for outcome, n in (fields.get("trajectories") or {}).items():
            if outcome in TRAJECTORY_OUTCOMES and n > 0:
                self.trajectories.labels(outcome=outcome).inc(n)
        for queue, depth in (fields.get("queue_depths") or {}).items():
            self.queue_depth.labels(queue=queue).set(depth)
        for stage, fraction in (fields.get("busy") or {}).items():
            self.stage_busy.labels(stage=stage).set(fraction)
        self.heartbeat()

    def _on_validation(self, score: float | None, best: float | None) -> None:
        if score is None:
            return
        self.validation_score.set(score)
        best = max(score, best) if isinstance(best, (int, float)) else score
        if self._best is None or best > self._best:
            self._best = best
            self.validation_best.set(best)

    def on_judge(self, requests: int, tokens: int, http_429: int, failures: int, retries: int,
                 paused: bool, reasoning_tokens: int = 0, cached_tokens: int = 0, usd: float = 0.0) -> None:
        """The judge client's cumulative counters; called periodically, so only the increase counts."""
        now = {"requests": requests, "tokens": tokens, "http_429": http_429, "failures": failures,
               "retries": retries, "reasoning_tokens": reasoning_tokens, "cached_tokens": cached_tokens, "usd": usd}
        for key, value in now.items():
            self.judge[key].inc(counter_increase(self._judge_seen[key], value))
            self._judge_seen[key] = value
        self._judge_paused = paused
        self.judge_paused.set(1 if paused else 0)

    def on_judge_endpoints(self, endpoints: dict[str, Any]) -> None:
        """Each endpoint's cumulative counters (a JudgeStats by endpoint name), label `endpoint`."""
        for name, stats in endpoints.items():
            for key in ENDPOINT_COUNTERS:
                value = getattr(stats, key)
                seen = self._endpoint_seen.get((name, key), 0)
                self.judge_endpoint[key].labels(endpoint=name).inc(max(0.0, counter_increase(seen, value)))
                self._endpoint_seen[(name, key)] = value
            self.judge_endpoint_paused.labels(endpoint=name).set(1 if stats.paused else 0)
            self.judge_endpoint_removed.labels(endpoint=name).set(1 if getattr(stats, "removed", False) else 0)

    def on_checkpoint(self, kind: str, ok: bool, persistent: str | None = None) -> None:
        """One checkpoint write's outcome; `persistent`: the writer's reason when failures persist."""
        self.checkpoint_uploads.labels(kind=kind, result="ok" if ok else "failed").inc()
        if ok:
            self._checkpoints_failing = None
        elif persistent:
            self._checkpoints_failing = persistent

    def heartbeat(self) -> None:
        """Something progressed: a trajectory was scored or a step learned."""
        self._last_progress = self._clock()

    def health(self) -> tuple[bool, str]:
        """(True, "ok"), or (False, why) once nothing progressed for longer than the stall timeout
        or while checkpoint writes fail persistently."""
        if self._checkpoints_failing:
            return False, f"{CHECKPOINTS_FAILING}: {self._checkpoints_failing}"
        idle = self._idle_s()
        if idle <= self.stall_timeout_s:
            return True, "ok"
        reason = f"no progress for {idle:.0f} s"
        return False, reason + (" (judge paused)" if self._judge_paused else "")

    def _idle_s(self) -> float:
        return max(0.0, self._clock() - self._last_progress)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


def counter_increase(previous: float, current: float) -> float:
    """How much a cumulative counter grew; a counter that went down was restarted from 0."""
    return current - previous if current >= previous else current


def _set_if_number(gauge: Gauge, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        gauge.set(value)


# ---------------------------------------------------------------- HTTP (routing is pure, I/O below)

MAX_REQUEST_LINE = MAX_HEADER = 8190  # a longer request line or header is refused (400)
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"

Response = tuple[int, str, bytes]  # status, content type, body


def route(metrics: RunMetrics, method: str, path: str) -> Response:
    """The response to one request, from its method and path alone."""
    if path not in ("/metrics", "/healthz"):
        return 404, TEXT, b"not found\n"
    if method != "GET":
        return 405, TEXT, b"method not allowed\n"
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST, metrics.exposition()
    healthy, reason = metrics.health()
    if healthy:
        return 200, JSON, orjson.dumps({"status": "ok"})
    status = "failing" if reason.startswith(CHECKPOINTS_FAILING) else "stalled"
    return 503, JSON, orjson.dumps({"status": status, "reason": reason})


class MetricsServer:
    """A running endpoint on aiohttp; `port` is the bound one (useful with port 0)."""

    def __init__(self, metrics: RunMetrics) -> None:
        self._metrics = metrics
        app = web.Application(handler_args={"max_line_size": MAX_REQUEST_LINE, "max_field_size": MAX_HEADER})
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError as e:
            await self._runner.cleanup()
            raise ConfigError(f"metrics endpoint cannot listen on {host}:{port} (metrics.host/metrics.port, "
                              f"--metrics-host/--metrics-port): {e.strerror or e}") from None
        self.host, self.port = self._runner.addresses[0][:2]

    async def aclose(self) -> None:
        await self._runner.cleanup()  # idle connections are closed, not waited for

    async def _handle(self, request: web.Request) -> web.Response:
        status, content_type, body = route(self._metrics, request.method, request.path)
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        if status == 405:
            headers["Allow"] = "GET"
        return web.Response(status=status, body=body, headers={**headers, "Content-Type": content_type})


async def serve_metrics(metrics: RunMetrics, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """Start serving /metrics and /healthz; close with `await server.aclose()`."""
    server = MetricsServer(metrics)
    await server.start(host, port)
    return server
