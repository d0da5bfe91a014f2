"""A pool of judge deployments: each its own limiter, breaker and counters; a call goes where it
can start soonest, so throughput is close to the sum of the quotas.

Routing (pure, `soonest`): among the endpoints that are not paused and have a free slot, the
one whose quota lets the call start first; ties go to the least loaded (in flight / cap), then
to the first listed. A retry avoids the endpoint that just failed it when another can take it.

An endpoint that keeps failing (`breaker_failures` failed attempts in a row: 5xx, timeouts,
connection errors) is paused by its breaker (`breaker.py`; `judge_paused` with `endpoint`) and
its share moves to the others; one probe call every `probe_interval_s` brings it back
(`judge_resumed`). An endpoint answering 429s is held by its own limiter for the Retry-After
(and comes back slower), so the router sends calls elsewhere meanwhile: a 429 is pacing, not
ill health. When every endpoint is paused, calls wait for the first to come back: intake stops
through backpressure, nothing fails and nothing scores zero. With one endpoint (no
`[[judge.endpoints]]`) the stage's offer-level breaker does this job, as before.

An endpoint whose key, permission or deployment is refused (401/403/404: a `JudgeError`), on a
call or on its probe, is out for good (its breaker stops; `judge_endpoint_removed`, `/metrics`):
its calls go to the others, and only when none is left does the call raise that error (the run
ends with it). A probe follows the stage's rule: a transient failure probes again, anything
else removes the endpoint. Every failure is described with the endpoint that met it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import openai

from ..breaker import Breaker
from ..config import JudgeConfig, Secrets
from ..errors import JudgeError
from ..ops import log as logging_
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
    breaker: Breaker = field(init=False)  # stopped: the endpoint is out for good (`removed` says why)
    removed: JudgeError | None = None  # why it is out for good

    @property
    def name(self) -> str:
        return self.client.name

    @property
    def paused(self) -> bool:
        return self.breaker.paused


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
            endpoint = Endpoint(JudgeClient(cfg, spec, lim, stats, own), lim, own)
            endpoint.breaker = Breaker(
                partial(self._probe, endpoint), cfg.probe_interval_s, threshold=cfg.breaker_failures,
                fatal=lambda e: not is_retryable(e), on_open=partial(self._paused, endpoint),
                on_close=partial(self._resumed, endpoint), on_probe_failed=partial(self._probe_failed, endpoint),
                on_stop=partial(self._removed, endpoint), name=f"judge-probe-{endpoint.name}")
            self.endpoints.append(endpoint)
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
        endpoint.breaker.succeeded()

    def _attempt_failed(self, endpoint: Endpoint, exc: BaseException) -> None:
        exc.__dict__[MET_AT] = endpoint  # for `describe`: the stage words the failure with it
        if not self.is_pool or not is_retryable(exc) or isinstance(exc, (UnreadableVerdict, OfferRejected)):
            return
        if isinstance(exc, openai.APIStatusError) and exc.status_code == 429:
            # pacing, not health: the endpoint's limiter waits out its Retry-After, and routing
            # by soonest start already sends calls elsewhere meanwhile (a storm moves the share)
            return
        endpoint.breaker.failed(self.describe(exc, endpoint))

    def _paused(self, endpoint: Endpoint, reason: str) -> None:
        endpoint.stats.paused = True
        log().warning("judge_paused", endpoint=endpoint.name, consecutive_failures=endpoint.breaker.failures,
                      reason=reason, probe_interval_s=self.cfg.probe_interval_s,
                      endpoints_left=sum(not e.paused for e in self.endpoints))

    def _resumed(self, endpoint: Endpoint, paused_s: float) -> None:
        endpoint.stats.paused = False
        self._changed.set()
        log().info("judge_resumed", endpoint=endpoint.name, paused_s=round(paused_s, 3))

    def _taken_out(self, endpoint: Endpoint, error: JudgeError) -> bool:
        """A pool's endpoint refused our key or deployment: out it goes. True when others are left
        to take the call (with one endpoint, or none left, the run ends with `error`)."""
        if not self.is_pool:
            return False
        endpoint.breaker.stop(error)
        return not all(e.removed for e in self.endpoints)

    def _removed(self, endpoint: Endpoint, error: BaseException) -> None:
        """`endpoint` is out for good (a refused key, permission or deployment, on a call or its
        probe: its breaker stopped); the others go on."""
        endpoint.removed = error if isinstance(error, JudgeError) else JudgeError(self.describe(error, endpoint))
        endpoint.stats.paused = endpoint.stats.removed = True
        self._changed.set()  # a router waiting on it looks again (and raises when none is left)
        log().error("judge_endpoint_removed", endpoint=endpoint.name, reason=str(endpoint.removed),
                    endpoints_left=sum(e.removed is None for e in self.endpoints))

    def _last_removed(self) -> JudgeError:
        return next(e.removed for e in reversed(self.endpoints) if e.removed is not None)

    async def _probe(self, endpoint: Endpoint) -> bool:
        messages = sample_messages()
        async with endpoint.limiter.slot(endpoint.client.charge(messages, self.cfg.max_tokens)) as lease:
            await endpoint.client.exchange(messages, lease, self.cfg.max_tokens)
        return True

    def _probe_failed(self, endpoint: Endpoint, error: Exception) -> None:
        # the stage's rule: a transient failure probes again; a key, a deployment, a bug stops the
        # breaker, which removes the endpoint
        log().warning("judge_probe_failed", endpoint=endpoint.name, reason=self.describe(error, endpoint),
                      permanent=not is_retryable(error))

    @property
    def all_paused(self) -> bool:
        return all(e.paused for e in self.endpoints)

    # ------------------------------------------------------------ the rest

    def describe(self, exc: BaseException, endpoint: Endpoint | None = None) -> str:
        """One line on a failure, naming the endpoint that met it (the first when unknown)."""
        return (endpoint or getattr(exc, MET_AT, None) or self.first).client.describe(exc)

    async def aclose(self) -> None:
        await asyncio.gather(*(e.breaker.aclose() for e in self.endpoints))
        for e in self.endpoints:
            await e.client.aclose()
