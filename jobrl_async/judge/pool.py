"""A pool of judge deployments: each its own limiter, breaker and counters; a call goes where it
can start soonest, so throughput is close to the sum of the quotas.

Routing (pure, `soonest`): among the endpoints that are not paused and have a free slot, the
one whose quota lets the call start first; ties go to the least loaded (in flight / cap), then
to the first listed. A retry avoids the endpoint that just failed it when another can take it.

An endpoint that keeps failing (`breaker_failures` failed attempts in a row: 5xx, timeouts,
connection errors) is paused (`judge_paused` with `endpoint`) and its share moves to the
others; one probe call every `probe_interval_s` brings it back (`judge_resumed`). An endpoint
answering 429s is held by its own limiter for the Retry-After (and comes back slower), so the
router sends calls elsewhere meanwhile: a 429 is pacing, not ill health. When every endpoint
is paused, calls wait for the first to come back: intake stops through backpressure, nothing
fails and nothing scores zero. With one endpoint (no
`[[judge.endpoints]]`) the stage's offer-level breaker does this job, as before.

An endpoint whose key, permission or deployment is refused (401/403/404: a `JudgeError`), on a
call or on its probe, is out for good (`judge_endpoint_removed`, `/metrics`): its calls go to
the others, and only when none is left does the call raise that error (the run ends with it).
A probe follows the stage's rule: a transient failure probes again, anything else removes the
endpoint. Every failure is described with the endpoint that met it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai

from .. import log as logging_
from ..config import JudgeConfig, Secrets
from ..errors import JudgeError
from ..retry import retry_after_s, retrying
from .client import (
    BACKOFF_FIRST_S,
    JudgeClient,
    JudgeStats,
    OfferRejected,
    ReasoningCut,
    is_retryable,
    pool_endpoints,
    standard_endpoint,
)
from .limiter import Lease, Limiter
from .parse import UnreadableVerdict
from .probe import sample_messages
from .prompts import PromptScale

T = TypeVar("T")
MET_AT = "_judge_endpoint"  # the attribute naming the endpoint a failed attempt met
POLL_S = 0.05  # longest sleep of a waiting router before it looks again (a resume, a refund)
# An unreadable reply is retried once: at temperature 0 the same prompt is mostly read alike, and
# an offer that makes its judge's reply unreadable (a forged verdict echoed) pays for every try.
UNREADABLE_ATTEMPTS = 2


def log() -> Any:
    return logging_.get_logger("judge")


def soonest(options: Sequence[tuple[int, float, float]]) -> int | None:
    """Pure routing: `options` are (index, wait_s, load); the index that starts first, or None."""
    if not options:
        return None
    return min(options, key=lambda o: (round(o[1], 6), o[2], o[0]))[0]


@dataclass
class Endpoint:
    client: JudgeClient
    limiter: Limiter
    stats: JudgeStats
    failures_in_a_row: int = 0
    paused: bool = False
    paused_at: float = 0.0
    probe: asyncio.Task | None = None
    removed: JudgeError | None = None  # why it is out for good

    @property
    def name(self) -> str:
        return self.client.name


@dataclass
class Attempt:
    """One call's state across its retries: which endpoint it is on, which one failed it last."""

    max_tokens: int
    schema: dict | None = None  # the reply's strict json_schema format, where an endpoint takes it
    avoid: int | None = None
    endpoint: Endpoint | None = field(default=None)
    boost: bool = False  # a reasoning model cut the last reply: allow it more reasoning this time
    only: Endpoint | None = None  # pinned to one endpoint (`judge check`)
    unreadable: int = 0  # replies that could not be read as a verdict so far


class JudgePool:
    """Every LLM call of the judge: routed, paced per endpoint, retried, with per-endpoint breakers."""

    def __init__(self, cfg: JudgeConfig, secrets: Secrets, stats: JudgeStats,
                 env: Mapping[str, str] | None = None, limiter: Limiter | None = None) -> None:
        self.cfg, self.stats = cfg, stats
        specs = pool_endpoints(cfg, os.environ if env is None else env) if cfg.endpoints else \
            [standard_endpoint(cfg, secrets)]
        self.endpoints: list[Endpoint] = []
        for i, spec in enumerate(specs):
            own = JudgeStats()
            # the caller's limiter stands for the single endpoint of the standard variables only
            given = limiter if (limiter is not None and not cfg.endpoints) else None
            lim = given or Limiter.from_config(cfg, spec.rpm, spec.tpm)
            self.endpoints.append(Endpoint(JudgeClient(cfg, spec, lim, stats, own), lim, own))
        self.scale = PromptScale()  # what the endpoints count per estimated prompt token, learnt together
        for endpoint in self.endpoints:
            endpoint.client.scale = self.scale
        self.is_pool = bool(cfg.endpoints)
        self._turn = asyncio.Lock()
        self._changed = asyncio.Event()
        models = {e.client.model for e in self.endpoints}
        if len(models) > 1:
            log().warning("judge_models_differ", models=sorted(models),
                          endpoints={e.name: e.client.model for e in self.endpoints},
                          hint="every endpoint should serve the same judge model: verdicts would differ by route")

    @property
    def first(self) -> Endpoint:
        return self.endpoints[0]

    @property
    def in_flight(self) -> int:
        return sum(e.limiter.in_flight for e in self.endpoints)

    @property
    def model(self) -> str:
        return self.first.client.model

    # ------------------------------------------------------------ routing

    async def _route(self, charge: Callable[[Endpoint], float], avoid: int | None,
                     only: Endpoint | None = None) -> tuple[Endpoint, Lease]:
        """The endpoint a call starts on soonest, and its lease; `charge`: the call's intake tokens
        there (an endpoint's dialect and reasoning allowance decide its reply budget)."""
        async with self._turn:  # FIFO across callers: no starvation of large prompts
            while True:
                if all(e.removed for e in self.endpoints):
                    raise self._last_removed()
                if only is not None and only.removed is not None:  # `judge check` of a refused endpoint
                    raise only.removed
                now = time.monotonic()
                costs = [charge(e) for e in self.endpoints]
                options = [(i, e.limiter.wait_s(costs[i], now), e.limiter.in_flight / e.limiter.max_concurrency)
                           for i, e in enumerate(self.endpoints)
                           if not (e.paused or e.removed) and e.limiter.has_room and only in (None, e)]
                if avoid is not None and len(options) > 1:
                    options = [o for o in options if o[0] != avoid] or options
                choice = soonest(options)
                if choice is not None and options[[o[0] for o in options].index(choice)][1] <= 0:
                    endpoint = self.endpoints[choice]
                    return endpoint, endpoint.limiter.admit(costs[choice], now)
                best = min((o[1] for o in options), default=POLL_S)
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), max(0.001, min(best, POLL_S)))
                except TimeoutError:
                    pass

    def _release(self, endpoint: Endpoint) -> None:
        endpoint.limiter.release()
        self._changed.set()

    # ------------------------------------------------------------ calls

    async def ask(self, label: str, messages: list[dict], parse: Callable[[str], T], max_tokens: int,
                  attempts: int | None = None, retry_if: Callable[[BaseException], bool] = is_retryable,
                  schema: dict | None = None, only: Endpoint | None = None) -> T:
        """One judgement (`parse` of an answer of at most `max_tokens`), retried across the pool
        (`only`: on that endpoint, as `judge check` asks each one)."""
        state = Attempt(max_tokens=max_tokens, schema=schema, only=only)

        def retry_this(e: BaseException) -> bool:
            if isinstance(e, UnreadableVerdict) and not isinstance(e, ReasoningCut):
                state.unreadable += 1
                if state.unreadable >= UNREADABLE_ATTEMPTS:
                    return False
            return retry_if(e)

        retried = retrying(attempts=attempts or self.cfg.max_retries + 1, first_s=BACKOFF_FIRST_S,
                           max_s=self.cfg.backoff_max_s, retry_if=retry_this, asked=self._asked,
                           on_retry=lambda n, w, e: self._on_retry(state, n, w, e))
        return await retried(self._attempt, state, messages, parse)

    async def _attempt(self, state: Attempt, messages: list[dict], parse: Callable[[str], T]) -> T:
        while True:
            endpoint, lease = await self._route(
                lambda e: e.client.charge(messages, state.max_tokens, state.boost), state.avoid, state.only)
            state.endpoint = endpoint
            try:
                text = await endpoint.client.exchange(messages, lease, state.max_tokens, state.schema, state.boost)
            except JudgeError as e:
                self._release(endpoint)
                if not self._taken_out(endpoint, e):
                    raise
                continue  # not a retry: the call goes to the endpoints left
            except BaseException as e:
                self._release(endpoint)
                state.avoid = self.endpoints.index(endpoint)
                self._attempt_failed(endpoint, e)
                raise
            break
        self._release(endpoint)
        self._attempt_ok(endpoint)
        try:
            return parse(text)
        except UnreadableVerdict:
            state.avoid = None  # the model's reply, not the endpoint's health
            raise

    def _asked(self, exc: BaseException) -> float | None:
        """The wait a retry owes the server. In a pool a 429 holds only its endpoint (its limiter
        waits it out), so the retry may go elsewhere at once."""
        if not isinstance(exc, openai.APIStatusError):
            return None
        if self.is_pool and exc.status_code == 429:
            return None
        return retry_after_s(exc.response.headers)

    def _on_retry(self, state: Attempt, attempt: int, wait: float, exc: BaseException | None) -> None:
        state.boost = state.boost or isinstance(exc, ReasoningCut)  # once cut, the larger allowance stays
        self.stats.retries += 1
        if state.endpoint is not None:
            state.endpoint.stats.retries += 1
        where = state.endpoint.name if state.endpoint else ""
        log().debug("judge_retry", attempt=attempt, wait_s=round(wait, 3), endpoint=where,
                    reason=self.describe(exc, state.endpoint) if exc else "")

    # ------------------------------------------------------------ per-endpoint breakers (pool only)

    def _attempt_ok(self, endpoint: Endpoint) -> None:
        endpoint.failures_in_a_row = 0
        if endpoint.paused:
            self._resume(endpoint)

    def _attempt_failed(self, endpoint: Endpoint, exc: BaseException) -> None:
        exc.__dict__[MET_AT] = endpoint  # for `describe`: the stage words the failure with it
        if not self.is_pool or not is_retryable(exc) or isinstance(exc, (UnreadableVerdict, OfferRejected)):
            return
        if isinstance(exc, openai.APIStatusError) and exc.status_code == 429:
            # pacing, not health: the endpoint's limiter waits out its Retry-After, and routing
            # by soonest start already sends calls elsewhere meanwhile (a storm moves the share)
            return
        endpoint.failures_in_a_row += 1
        if endpoint.failures_in_a_row >= self.cfg.breaker_failures and not endpoint.paused:
            self._pause(endpoint, self.describe(exc, endpoint))

    def _pause(self, endpoint: Endpoint, reason: str) -> None:
        endpoint.paused, endpoint.paused_at = True, time.monotonic()
        endpoint.stats.paused = True
        log().warning("judge_paused", endpoint=endpoint.name, consecutive_failures=endpoint.failures_in_a_row,
                      reason=reason, probe_interval_s=self.cfg.probe_interval_s,
                      endpoints_left=sum(not e.paused for e in self.endpoints))
        endpoint.probe = asyncio.create_task(self._probe(endpoint), name=f"judge-probe-{endpoint.name}")

    def _resume(self, endpoint: Endpoint) -> None:
        if endpoint.probe is not None and endpoint.probe is not asyncio.current_task():
            endpoint.probe.cancel()
        endpoint.probe = None
        endpoint.paused, endpoint.failures_in_a_row = False, 0
        endpoint.stats.paused = False
        self._changed.set()
        log().info("judge_resumed", endpoint=endpoint.name, paused_s=round(time.monotonic() - endpoint.paused_at, 3))

    def _taken_out(self, endpoint: Endpoint, error: JudgeError) -> bool:
        """A pool's endpoint refused our key or deployment: out it goes. True when others are left
        to take the call (with one endpoint, or none left, the run ends with `error`)."""
        if not self.is_pool:
            return False
        self._remove(endpoint, error)
        return not all(e.removed for e in self.endpoints)

    def _remove(self, endpoint: Endpoint, error: JudgeError) -> None:
        """Take `endpoint` out for good (a refused key, permission or deployment); the others go on."""
        if endpoint.removed is not None:
            return
        endpoint.removed, endpoint.paused = error, True
        endpoint.stats.paused = endpoint.stats.removed = True
        if endpoint.probe is not None and endpoint.probe is not asyncio.current_task():
            endpoint.probe.cancel()
        endpoint.probe = None
        self._changed.set()  # a router waiting on it looks again (and raises when none is left)
        log().error("judge_endpoint_removed", endpoint=endpoint.name, reason=str(error),
                    endpoints_left=sum(e.removed is None for e in self.endpoints))

    def _last_removed(self) -> JudgeError:
        return next(e.removed for e in reversed(self.endpoints) if e.removed is not None)

    async def _probe(self, endpoint: Endpoint) -> None:
        while True:
            await asyncio.sleep(self.cfg.probe_interval_s)
            messages = sample_messages()
            try:
                async with endpoint.limiter.slot(endpoint.client.charge(messages, self.cfg.max_tokens)) as lease:
                    await endpoint.client.exchange(messages, lease, self.cfg.max_tokens)
            except Exception as e:
                reason = self.describe(e, endpoint)
                log().warning("judge_probe_failed", endpoint=endpoint.name, reason=reason,
                              permanent=not is_retryable(e))
                if not is_retryable(e):  # the stage's rule: a probe cannot fix a key, a deployment, a bug
                    self._remove(endpoint, e if isinstance(e, JudgeError) else JudgeError(reason))
                    return
            else:
                self._resume(endpoint)
                return

    @property
    def all_paused(self) -> bool:
        return all(e.paused for e in self.endpoints)

    # ------------------------------------------------------------ the rest

    def describe(self, exc: BaseException, endpoint: Endpoint | None = None) -> str:
        """One line on a failure, naming the endpoint that met it (the first when unknown)."""
        return (endpoint or getattr(exc, MET_AT, None) or self.first).client.describe(exc)

    async def aclose(self) -> None:
        probes = [e.probe for e in self.endpoints if e.probe is not None]
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        for e in self.endpoints:
            e.probe = None
            await e.client.aclose()
