"""The judge stage: five criteria per offer, concurrently, and a breaker for outages.

    mode     language  xml  provided skills  relevance  completeness   calls/offer (per_criterion, per_offer)
    llm      LLM       LLM  LLM              LLM        LLM            5, 1
    hybrid   exact     exact exact           LLM        LLM            2, 1
    stub     local     local local           local      local          0 (5 simulated with latency)

`judge.calls = per_offer` asks every LLM criterion of the mode in one call (the offer sent
once, one JSON object keyed by criterion); a reply missing one, repeating one or adding one
fails the call (retried), never a zero. An exact duplicate of an offer already judged (same
context, text, criteria, judge model) reuses that verdict (`dedup.py`). LLM calls go through
the pool (`pool.py`): one endpoint, or `[[judge.endpoints]]`, each with its own quota.

A call that still fails after its retries fails its offer (`JudgeFailed`): the trajectory is
`judge_failed`, never a zero reward; so does a request the server refuses for what it holds
(400/413/422, `OfferRejected`). After `breaker_failures` consecutive failed offers (content
filter refusals aside: they are the offer's doing) the breaker (`breaker.py`) opens
(`judge_paused`): new offers wait, which backs the pipeline up, and one probe call every
`probe_interval_s` decides when to close it again (`judge_resumed`). A probe that meets a
permanent error (a rotated key, a deleted deployment) stops the breaker for good: the offers
waiting on it raise that JudgeError, so the judge stage fails and the run ends with its one line.

Before a run, `preflight` makes the same round trip as `judge check` with the normal retry
policy; a judge still down after it starts the run paused, and the probe decides.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..breaker import Breaker
from ..config import Config, JudgeConfig, Secrets
from ..errors import JudgeError
from ..flow.offer import language_identifier_loaded, load_language_identifier
from ..flow.records import CRITERIA, Context, CriterionVerdict, ScoredTrajectory, Trajectory, Verdict
from ..flow.rewards import reward
from ..ops.log import get_logger
from .client import (JudgeClient, JudgeStats, OfferRejected, ReasoningCut, is_name_error, is_rate_limited,
                     is_redirect, is_retryable)
from .dedup import DedupTable, dedup_key
from .limiter import Limiter
from .parse import UnreadableVerdict, parse_offer_reply, parse_reply
from .pool import Endpoint, JudgePool
from .probe import PROBE_CRITERION, sample_messages
from .prompts import JudgedOffer, build_messages, build_offer_messages, estimate_tokens, offer_max_tokens
from .schema import criterion_format, offer_format
from .skills import SkillBook
from .stub import EXACT_CRITERIA, exact_verdict, stub_verdict


def log() -> Any:
    """The judge's logger, looked up per event: logging may be configured after this import."""
    return get_logger("judge")


VERDICT_FORGERY = "verdict_forgery"  # an injection flag (prompts.injection_flags)
FORGERY_PENALISED = "forged_verdict_penalised"  # the flag of a verdict given the lowest score for it


class JudgeFailed(Exception):
    """One offer could not be judged after its retries (a per-trajectory outcome, not a user error).

    `filtered`: a content filter refused the offer; its own text is the cause, not the judge's
    health, so it does not count toward the breaker. `paced`: only 429s failed it: the quota
    (perhaps shared with another client) is pacing, not ill health, so neither does it.
    """

    def __init__(self, reason: str, *, filtered: bool = False, paced: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.filtered = filtered
        self.paced = paced


def retryable_at_start(exc: BaseException) -> bool:
    """Before a run, a host name that does not resolve or a URL that redirects is a typo to
    report, not an outage to wait out."""
    return is_retryable(exc) and not is_name_error(exc) and not is_redirect(exc)


def load_language_identifier_in_background() -> Future[None]:
    """py3langid's model in a worker thread: ~0.5 s of CPU that would stall the loop on the first offer."""
    loaded: Future[None] = Future()
    if language_identifier_loaded():
        loaded.set_result(None)
        return loaded

    def load() -> None:
        try:
            load_language_identifier()
        except BaseException as e:  # handed to whoever awaits the warm-up
            loaded.set_exception(e)
        else:
            loaded.set_result(None)

    threading.Thread(target=load, name="jobrl-langid", daemon=True).start()
    return loaded


class Judge:
    """Scores offers; one per process, so every call shares its limiter and its breaker."""

    def __init__(self, cfg: Config, secrets: Secrets | None = None, *, limiter: Limiter | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.cfg = cfg.judge
        self.mode = cfg.judge.mode
        self.secrets = secrets if secrets is not None else Secrets.from_env()
        self.env = env  # where `[[judge.endpoints]]` keys are read (os.environ when None)
        self.stats = JudgeStats()
        self.limiter = limiter or Limiter.from_config(cfg.judge)
        self.dedup = DedupTable(cfg.judge.dedup_max_entries)
        # Fail at start-up, not on the first offer, when the LLM is needed and not configured.
        self._pool = self._new_pool() if self.mode != "stub" else None
        self._book: SkillBook | None = None
        self._rng = random.Random(cfg.training.seed)  # stub latency jitter, reproducible
        # offer-level: a probe that meets a permanent error stops it, and every later offer raises that error
        self.breaker = Breaker(self._probe, cfg.judge.probe_interval_s, threshold=cfg.judge.breaker_failures,
                               fatal=lambda e: not is_retryable(e), on_open=self._paused, on_close=self._resumed,
                               on_probe_failed=self._probe_failed, name="judge-probe")
        # Every mode reads the offer's language (the stub and hybrid judge it, the LLM prompt quotes it).
        self._warm = load_language_identifier_in_background()

    @property
    def llm_criteria(self) -> tuple[str, ...]:
        """The criteria an LLM judges in this mode (none for the stub)."""
        return llm_criteria(self.mode)

    @property
    def calls_per_offer(self) -> int:
        return calls_per_offer(self.mode, self.cfg.calls, self.cfg.stub_latency_ms)

    @property
    def pool(self) -> JudgePool:
        if self._pool is None:
            self._pool = self._new_pool()
        return self._pool

    @property
    def client(self) -> JudgeClient:
        """The first endpoint's client (the only one without `[[judge.endpoints]]`)."""
        return self.pool.first.client

    def _new_pool(self) -> JudgePool:
        pool = JudgePool(self.cfg, self.secrets, self.stats, env=self.env, limiter=self.limiter)
        self.limiter = pool.first.limiter
        return pool

    # ------------------------------------------------------------ scoring

    async def score(self, context: Context, offer: str) -> Verdict:
        """All five criteria of one offer, run concurrently; JudgeFailed after exhausted retries.

        JudgeError when the judge is misconfigured, now or as found by the breaker's probe.
        """
        await self._ready()
        read = JudgedOffer.read(offer)  # parsed once for the five criteria
        try:
            criteria = await self._all_criteria(context, read)
        except JudgeFailed as e:
            self._failed(e)
            raise
        self.breaker.succeeded()  # the count starts again; open, an offer in flight got through: it closes
        flags = tuple(dict.fromkeys([*read.flags, *(f for v in criteria.values() for f in v.flags)]))
        if flags:
            log().warning("judge_flagged", flags=list(flags), job_title=context.job_title, index=context.index)
        return Verdict(criteria=criteria, reward=reward(criteria), flags=flags)

    async def score_trajectory(self, t: Trajectory) -> ScoredTrajectory:
        try:
            verdict = await self.score(t.context, t.completion_text)
        except JudgeFailed as e:
            log().warning("judge_failed", reason=e.reason, step=t.step, group=t.group, attempt=t.attempt, split=t.split)
            return ScoredTrajectory(t, "judge_failed", reason=e.reason)
        return ScoredTrajectory(t, "scored", verdict)

    async def _ready(self) -> None:
        """Wait for the language identifier, and while the breaker is open; raise what stopped the probe."""
        if not self._warm.done():
            await asyncio.wrap_future(self._warm)
        await self.breaker.wait()  # the breaker is open: intake waits for the probe

    async def warm_up(self) -> None:
        """Return once the language identifier is loaded (started in a worker thread at construction)."""
        await asyncio.wrap_future(self._warm)

    async def _all_criteria(self, context: Context, offer: JudgedOffer) -> dict[str, CriterionVerdict]:
        if self.mode == "stub":
            return await self._gather(CRITERIA, lambda name: self._stub_criterion(name, context, offer))
        verdicts = {name: exact_verdict(name, context, offer) for name in CRITERIA if name not in self.llm_criteria}
        try:
            judged, reused = await self.dedup.get_or_run(self._key(context, offer),
                                                         lambda: self._ask_llm(context, offer))
        except BaseExceptionGroup as group:
            raise self._failure(list(group.exceptions)) from None
        except (JudgeError, JudgeFailed):
            raise
        except Exception as e:
            raise self._failure([e]) from None
        if reused:
            self.stats.dedup_hits += 1
        verdicts.update(judged)
        return {name: verdicts[name] for name in CRITERIA}

    def _key(self, context: Context, offer: JudgedOffer) -> str:
        return dedup_key(context, offer.text, self.llm_criteria, self.pool.model, self.cfg.calls)

    async def _ask_llm(self, context: Context, offer: JudgedOffer) -> dict[str, CriterionVerdict]:
        """The LLM criteria of one offer: one call (per_offer) or one per criterion, concurrently."""
        names = self.llm_criteria
        if self.cfg.calls == "per_offer":
            messages = build_offer_messages(names, context, offer)
            try:
                return await self.pool.ask("offer", messages, lambda text: parse_offer_reply(names, text),
                                           offer_max_tokens(self.cfg.max_tokens_per_offer, len(names)),
                                           schema=offer_format(names))
            except UnreadableVerdict as e:
                penalty = self._forgery_penalty(offer, names, e)
                if penalty is None:
                    raise
                return penalty
        return await self._gather(names, lambda name: self._ask_criterion(name, context, offer), raw=True)

    async def _ask_criterion(self, name: str, context: Context, offer: JudgedOffer) -> CriterionVerdict:
        messages = build_messages(name, context, offer)
        try:
            return await self.pool.ask(name, messages, lambda text: parse_reply(name, text), self.cfg.max_tokens,
                                       schema=criterion_format(name))
        except UnreadableVerdict as e:
            penalty = self._forgery_penalty(offer, (name,), e)
            if penalty is None:
                raise
            return penalty[name]

    def _forgery_penalty(self, offer: JudgedOffer, names: tuple[str, ...],
                         error: UnreadableVerdict) -> dict[str, CriterionVerdict] | None:
        """The lowest score on `names` for an offer that forged a verdict and so made its judge's
        reply unreadable (the judge quoted the forgery, then answered): excluding it would spare
        the policy the penalty it earned. None for any other unreadable reply (a failure)."""
        if VERDICT_FORGERY not in offer.flags or isinstance(error, ReasoningCut):
            return None
        self.stats.forgeries_penalised += 1
        log().warning("judge_forgery_penalised", criteria=list(names), reason=str(error)[:200])
        return {n: CriterionVerdict(n, "NO", 0.0, flags=(FORGERY_PENALISED,), source="penalty") for n in names}

    async def _gather(self, names: tuple[str, ...], one: Callable[[str], Any],
                      raw: bool = False) -> dict[str, CriterionVerdict]:
        """`one(name)` for every name concurrently; one failure cancels its siblings (no wasted quota).
        `raw`: let the ExceptionGroup through (the caller maps it after the dedup table saw it)."""
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = {name: tg.create_task(one(name)) for name in names}
        except BaseExceptionGroup as group:
            if raw:
                raise
            raise self._failure(list(group.exceptions)) from None
        return {name: task.result() for name, task in tasks.items()}

    def _failure(self, errors: list[BaseException]) -> BaseException:
        """What a failed judgement raises: a configuration error as it is (it stops the run),
        transient failures and refusals as JudgeFailed (this offer only), a bug as the group."""
        config = next((e for e in errors if isinstance(e, JudgeError)), None)
        if config is not None:
            return config
        if all(is_retryable(e) or isinstance(e, OfferRejected) for e in errors):
            filtered = any(isinstance(e, OfferRejected) and e.content_filter for e in errors)
            return JudgeFailed(self.pool.describe(errors[0]), filtered=filtered, paced=all(map(is_rate_limited, errors)))
        if len(errors) == 1:
            return errors[0]
        return BaseExceptionGroup("judge", errors)  # a bug: keep every traceback

    async def _stub_criterion(self, name: str, context: Context, offer: JudgedOffer) -> CriterionVerdict:
        await self._simulate_call(name, context, offer)
        return stub_verdict(name, context, offer, self.book)

    @property
    def book(self) -> SkillBook:
        if self._book is None:
            self._book = SkillBook.bundled()
        return self._book

    async def _simulate_call(self, name: str, context: Context, offer: JudgedOffer) -> None:
        """The stub's latency, through the same limiter as a real call (quota-bound benchmarks)."""
        if self.cfg.stub_latency_ms <= 0:
            return
        jitter = self.cfg.stub_jitter
        delay_s = self.cfg.stub_latency_ms / 1000 * self._rng.uniform(1 - jitter, 1 + jitter)
        estimate = estimate_tokens(build_messages(name, context, offer), self.cfg.max_tokens)
        async with self.limiter.slot(estimate):
            self.stats.requests += 1
            self.stats.charged_tokens += estimate
            await asyncio.sleep(delay_s)
        self.stats.latencies_ms.append(delay_s * 1000)

    # ------------------------------------------------------------ breaker

    def _failed(self, failure: JudgeFailed) -> None:
        self.stats.failures += 1
        if failure.filtered or failure.paced:  # the offer's text, or the quota: nothing of the judge's health
            return
        self.breaker.failed(failure.reason)

    def _paused(self, reason: str) -> None:
        self.stats.paused = True
        log().warning("judge_paused", consecutive_failures=self.breaker.failures, reason=reason,
                      probe_interval_s=self.cfg.probe_interval_s)

    def _resumed(self, paused_s: float) -> None:
        self.stats.paused = False
        log().info("judge_resumed", paused_s=round(paused_s, 3))

    async def _probe(self) -> bool:
        await self._sample_call(attempts=1)
        return True

    def _probe_failed(self, error: Exception) -> None:
        if is_retryable(error):
            log().warning("judge_probe_failed", reason=self.pool.describe(error))
            return
        # a rotated key, a deleted deployment, a bug: probing cannot fix it, the breaker stops and
        # the offers waiting on it, and any later one, raise `error`
        reason = str(error) if isinstance(error, JudgeError) else self.pool.describe(error)
        log().error("judge_probe_failed", reason=reason, permanent=True)

    async def _sample_call(self, attempts: int | None = None,
                           retry_if: Callable[[BaseException], bool] = is_retryable) -> CriterionVerdict:
        """The smallest question that proves the LLM judge answers: one criterion of a small valid offer.

        A refusal of this offer is a JudgeError: the request itself is refused (a parameter the
        model does not take, a context too small), so every offer would be.
        """
        messages = sample_messages()
        try:
            return await self.pool.ask(PROBE_CRITERION, messages, lambda text: parse_reply(PROBE_CRITERION, text),
                                       self.cfg.max_tokens, attempts=attempts, retry_if=retry_if,
                                       schema=criterion_format(PROBE_CRITERION))
        except OfferRejected as e:
            raise JudgeError(f"{e}; this was a small sample offer, so every request would be refused") from None

    async def _first_call(self) -> CriterionVerdict:
        """The sample call with the normal retry policy; a host name that does not resolve, or a
        redirect, is a JudgeError."""
        try:
            return await self._sample_call(retry_if=retryable_at_start)
        except Exception as e:
            if is_name_error(e) or is_redirect(e):
                raise JudgeError(self.pool.describe(e)) from None
            raise

    # ------------------------------------------------------------ check, preflight, metrics, close

    async def check(self) -> dict[str, Any]:
        """A real round trip to the LLM judge, retried like any call; JudgeError with a clear line when it fails."""
        started, sent = time.monotonic(), self.stats.requests
        try:
            verdict = await self._first_call()
        except Exception as e:
            if not is_retryable(e):  # JudgeError, and bugs as they are
                raise
            raise JudgeError(self.pool.describe(e)) from None
        return self._check_result(verdict, started, sent)

    async def preflight(self) -> dict[str, Any] | None:
        """Before a run: the check, except that a judge still down after the retries does not stop
        the run. It starts paused (`judge_paused`) and the breaker's probe decides. A key, a
        deployment or a host name that is wrong is a JudgeError (one line, exit 1)."""
        await self.warm_up()
        if self.mode == "stub":
            return None
        started, sent = time.monotonic(), self.stats.requests
        try:
            verdict = await self._first_call()
        except Exception as e:
            if not is_retryable(e):
                raise
            self.breaker.open(self.pool.describe(e))
            return None
        result = self._check_result(verdict, started, sent)
        log().info("judge_ready", endpoint=result["endpoint"], model=result["model"],
                   latency_ms=result["latency_ms"], requests=result["requests"])
        return result

    def _check_result(self, verdict: CriterionVerdict, started: float, sent: int) -> dict[str, Any]:
        return {
            "ok": True,
            "backend": self.client.backend,
            "endpoint": self.client.endpoint,
            "model": self.client.model,
            **self.client.learnt(),
            "latency_ms": round((time.monotonic() - started) * 1000, 1),
            "requests": self.stats.requests - sent,  # more than 1: transient errors were retried
            "criterion": PROBE_CRITERION,
            "verdict": verdict.as_dict(),
        }

    async def check_endpoints(self) -> list[dict[str, Any]]:
        """`judge check` of a pool: the same round trip on every endpoint, one result each
        (`ok: false` with the reason for one that fails; the others are still checked)."""
        return list(await asyncio.gather(*(self._check_endpoint(e) for e in self.pool.endpoints)))

    async def _check_endpoint(self, endpoint: Endpoint) -> dict[str, Any]:
        client = endpoint.client
        started, sent = time.monotonic(), endpoint.stats.requests
        base = {"endpoint_name": client.name, "backend": client.backend, "endpoint": client.endpoint,
                "model": client.model, "rpm": client.spec.rpm, "tpm": client.spec.tpm}
        try:
            verdict = await self.pool.ask(PROBE_CRITERION, sample_messages(),
                                          lambda text: parse_reply(PROBE_CRITERION, text), self.cfg.max_tokens,
                                          retry_if=retryable_at_start, schema=criterion_format(PROBE_CRITERION),
                                          only=endpoint)
        except Exception as e:
            if isinstance(e, JudgeError):
                return {"ok": False, **base, "error": str(e.args[0]) if e.args else str(e)}
            if not (is_retryable(e) or isinstance(e, OfferRejected) or is_name_error(e)):
                raise
            return {"ok": False, **base, "error": client.describe(e)}
        return {"ok": True, **base, **client.learnt(), "latency_ms": round((time.monotonic() - started) * 1000, 1),
                "requests": endpoint.stats.requests - sent, "criterion": PROBE_CRITERION,
                "verdict": verdict.as_dict()}

    def metrics(self) -> dict[str, Any]:
        in_flight = self._pool.in_flight if self._pool is not None else self.limiter.in_flight
        return {**self.stats.as_dict(), "mode": self.mode, "in_flight": in_flight}

    def endpoint_stats(self) -> dict[str, JudgeStats]:
        """Per-endpoint counters (a pool's `/metrics` label `endpoint`); empty for the stub."""
        if self._pool is None:
            return {}
        return {e.name: e.stats for e in self._pool.endpoints}

    async def aclose(self) -> None:
        await self.breaker.aclose()
        if self._pool is not None:
            await self._pool.aclose()

    async def __aenter__(self) -> "Judge":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def llm_criteria(mode: str) -> tuple[str, ...]:
    """The criteria an LLM judges: all five in llm, the two that need judgement in hybrid."""
    if mode == "llm":
        return CRITERIA
    if mode == "hybrid":
        return tuple(c for c in CRITERIA if c not in EXACT_CRITERIA)
    return ()


def judge_workers(cfg: JudgeConfig) -> int:
    """Offers judged at once: every endpoint's concurrency cap (each offer takes at least one call
    slot), so the calls in flight can reach the sum of the caps however many endpoints there are.
    `plan` assumes the same figure."""
    return cfg.max_concurrency * max(1, len(cfg.endpoints))


def calls_per_offer(mode: str, calls: str, stub_latency_ms: float = 0.0) -> int:
    if mode == "stub":
        return len(CRITERIA) if stub_latency_ms > 0 else 0
    return 1 if calls == "per_offer" else len(llm_criteria(mode))
