"""The judge stage: five criteria per offer, concurrently, and a breaker for outages.

    mode     language  xml  provided skills  relevance  completeness   calls/offer
    llm      LLM       LLM  LLM              LLM        LLM            5
    hybrid   exact     exact exact           LLM        LLM            2
    stub     local     local local           local      local          0 (5 simulated with latency)

A call that still fails after its retries fails its offer (`JudgeFailed`): the trajectory is
`judge_failed`, never a zero reward. After `breaker_failures` consecutive failed offers the
breaker opens (`judge_paused`): new offers wait, which backs the pipeline up, and one probe
call every `probe_interval_s` decides when to close it again (`judge_resumed`).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from ..config import Config, Secrets
from ..errors import JudgeError
from ..log import get_logger
from ..records import CRITERIA, Context, CriterionVerdict, ScoredTrajectory, Trajectory, Verdict
from ..rewards import reward
from .client import JudgeClient, JudgeStats, OfferRejected, is_retryable
from .limiter import Limiter
from .prompts import build_messages, estimate_tokens, injection_flags
from .skills import SkillBook
from .stub import EXACT_CRITERIA, exact_verdict, stub_verdict


def log() -> Any:
    """The judge's logger, looked up per event: logging may be configured after this import."""
    return get_logger("judge")


# What `judge check` and the breaker's probe ask: one small, valid offer.
SAMPLE_CONTEXT = Context("Data Scientist", "en", ("Python", "SQL", "Statistics"), "Technology")
PROBE_CRITERION = "skill_relevance"


class JudgeFailed(Exception):
    """One offer could not be judged after its retries (a per-trajectory outcome, not a user error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def example_offer(context: Context) -> str:
    """A well-formed offer for `context` (five required skills, three nice-to-have)."""
    extra = ["Communication", "Teamwork", "Problem solving", "Git", "Documentation", "Agile", "English", "Mentoring"]
    required = [*context.skills, *[s for s in extra if s not in context.skills]][:5]
    nice = [s for s in extra if s not in required][:3]
    fr = context.language == "fr"
    verbs = (["Concevoir", "Livrer", "Documenter", "Améliorer", "Collaborer avec"] if fr
             else ["Design", "Deliver", "Document", "Improve", "Collaborate with"])
    objects = (["les solutions", "les projets", "le travail", "les processus", "les équipes"] if fr
               else ["solutions", "projects", "the work", "processes", "the teams"])
    overview = (f"Nous recrutons un ou une {context.job_title} pour rejoindre notre équipe." if fr
                else f"We are hiring a {context.job_title} to join our team.")
    lines = ["<job_offer>", f"  <title>{context.job_title}</title>", f"  <overview>{overview}</overview>",
             "  <responsibilities>"]
    lines += [f"    <item>{v} {o}</item>" for v, o in zip(verbs, objects)]
    lines += ["  </responsibilities>", "  <required_skills>"]
    lines += [f"    <skill>{s}</skill>" for s in required]
    lines += ["  </required_skills>", "  <nice_to_have>"]
    lines += [f"    <skill>{s}</skill>" for s in nice]
    lines += ["  </nice_to_have>", "</job_offer>"]
    return "\n".join(lines)


class Judge:
    """Scores offers; one per process, so every call shares its limiter and its breaker."""

    def __init__(self, cfg: Config, secrets: Secrets | None = None, *, limiter: Limiter | None = None) -> None:
        self.cfg = cfg.judge
        self.mode = cfg.judge.mode
        self.secrets = secrets if secrets is not None else Secrets.from_env()
        self.stats = JudgeStats()
        self.limiter = limiter or Limiter.from_config(cfg.judge)
        # Fail at start-up, not on the first offer, when the LLM is needed and not configured.
        self._client = self._new_client() if self.mode != "stub" else None
        self._book: SkillBook | None = None
        self._rng = random.Random(cfg.training.seed)  # stub latency jitter, reproducible
        self._closed = asyncio.Event()  # set while the breaker is closed (calls flow)
        self._closed.set()
        self._consecutive_failures = 0
        self._paused_at = 0.0
        self._probe: asyncio.Task | None = None

    @property
    def calls_per_offer(self) -> int:
        return {"llm": len(CRITERIA), "hybrid": len(CRITERIA) - len(EXACT_CRITERIA)}.get(
            self.mode, len(CRITERIA) if self.cfg.stub_latency_ms > 0 else 0
        )

    @property
    def client(self) -> JudgeClient:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> JudgeClient:
        return JudgeClient(self.cfg, self.secrets, self.limiter, self.stats)

    # ------------------------------------------------------------ scoring

    async def score(self, context: Context, offer: str) -> Verdict:
        """All five criteria of one offer, run concurrently; JudgeFailed after exhausted retries."""
        if not self._closed.is_set():
            await self._closed.wait()  # the breaker is open: intake waits for the probe
        try:
            criteria = await self._all_criteria(context, offer)
        except JudgeFailed as e:
            self._failed(e.reason)
            raise
        self._succeeded()
        flags = tuple(dict.fromkeys([*injection_flags(offer), *(f for v in criteria.values() for f in v.flags)]))
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

    async def _all_criteria(self, context: Context, offer: str) -> dict[str, CriterionVerdict]:
        try:
            async with asyncio.TaskGroup() as tg:  # one failure cancels its siblings: no wasted quota
                tasks = {name: tg.create_task(self._criterion(name, context, offer)) for name in CRITERIA}
        except BaseExceptionGroup as group:
            errors = group.exceptions
            config = next((e for e in errors if isinstance(e, JudgeError)), None)
            if config is not None:  # a configuration error stops the run; it never drops offers
                raise config from None
            if all(is_retryable(e) or isinstance(e, OfferRejected) for e in errors):
                raise JudgeFailed(self.client.describe(errors[0])) from None
            raise  # a bug: keep every traceback
        return {name: task.result() for name, task in tasks.items()}

    async def _criterion(self, name: str, context: Context, offer: str) -> CriterionVerdict:
        if self.mode == "stub":
            await self._simulate_call(name, context, offer)
            return stub_verdict(name, context, offer, self.book)
        if self.mode == "hybrid" and name in EXACT_CRITERIA:
            return exact_verdict(name, context, offer)
        return await self.client.ask(name, build_messages(name, context, offer))

    @property
    def book(self) -> SkillBook:
        if self._book is None:
            self._book = SkillBook.bundled()
        return self._book

    async def _simulate_call(self, name: str, context: Context, offer: str) -> None:
        """The stub's latency, through the same limiter as a real call (quota-bound benchmarks)."""
        if self.cfg.stub_latency_ms <= 0:
            return
        jitter = self.cfg.stub_jitter
        delay_s = self.cfg.stub_latency_ms / 1000 * self._rng.uniform(1 - jitter, 1 + jitter)
        async with self.limiter.slot(estimate_tokens(build_messages(name, context, offer), self.cfg.max_tokens)):
            self.stats.requests += 1
            await asyncio.sleep(delay_s)
        self.stats.latencies_ms.append(delay_s * 1000)

    # ------------------------------------------------------------ breaker

    def _failed(self, reason: str) -> None:
        self.stats.failures += 1
        self._consecutive_failures += 1
        if self._consecutive_failures >= self.cfg.breaker_failures and self._closed.is_set():
            self._closed.clear()
            self.stats.paused = True
            self._paused_at = time.monotonic()
            log().warning("judge_paused", consecutive_failures=self._consecutive_failures, reason=reason,
                          probe_interval_s=self.cfg.probe_interval_s)
            self._probe = asyncio.create_task(self._probe_until_healthy(), name="judge-probe")

    def _succeeded(self) -> None:
        self._consecutive_failures = 0
        if not self._closed.is_set():  # an offer in flight got through: the API answers again
            self._resume()

    def _resume(self) -> None:
        if self._probe is not None and self._probe is not asyncio.current_task():
            self._probe.cancel()
        self._probe = None
        self._consecutive_failures = 0
        self.stats.paused = False
        self._closed.set()
        log().info("judge_resumed", paused_s=round(time.monotonic() - self._paused_at, 3))

    async def _probe_until_healthy(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.probe_interval_s)
            try:
                await self._probe_call()
            except Exception as e:  # whatever it is (a rotated key, a bug), keep probing and say why
                log().warning("judge_probe_failed", reason=self.client.describe(e))
            else:
                self._resume()
                return

    async def _probe_call(self) -> CriterionVerdict:
        """One call, no retries: the smallest question that proves the LLM judge answers."""
        messages = build_messages(PROBE_CRITERION, SAMPLE_CONTEXT, example_offer(SAMPLE_CONTEXT))
        return await self.client.ask(PROBE_CRITERION, messages, attempts=1)

    # ------------------------------------------------------------ check, metrics, close

    async def check(self) -> dict[str, Any]:
        """One real round trip to the LLM judge; JudgeError with a clear line when it fails."""
        started = time.monotonic()
        try:
            verdict = await self._probe_call()
        except JudgeError:
            raise
        except Exception as e:
            if not is_retryable(e):
                raise
            raise JudgeError(self.client.describe(e)) from None
        return {
            "ok": True,
            "backend": self.client.backend,
            "endpoint": self.client.endpoint,
            "model": self.client.model,
            "latency_ms": round((time.monotonic() - started) * 1000, 1),
            "criterion": PROBE_CRITERION,
            "verdict": verdict.as_dict(),
        }

    def metrics(self) -> dict[str, Any]:
        return {**self.stats.as_dict(), "mode": self.mode, "in_flight": self.limiter.in_flight}

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None
        if self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> "Judge":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
