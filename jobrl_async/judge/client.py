"""The judge's HTTP side: one endpoint through the real openai SDK, under its limiter.

One `exchange` is one attempt: Chat Completions in the endpoint's dialect, the reply's text.
Transient failures (429, 408/409, 5xx, timeouts, connection errors, unparseable replies)
are raised for the pool to retry with the shared policy (`jobrl_async.retry`: backoff with
full jitter, at least what the server's `retry-after-ms` / `Retry-After` asks); the SDK's own
retries are off so nothing retries twice. A 429 also holds the endpoint's limiter.

Never retried: a request the server refuses for what it holds (400, 413, 422: a content
filter, a prompt over the context length) is `OfferRejected`, which fails that offer only;
anything else (401, 403, 404: a key, a permission, a deployment) is a configuration error,
a `JudgeError` that names the endpoint and the variable to fix, never the key.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from collections.abc import Iterable, Mapping
from typing import Any

import openai

from . import dialect as dialects
from ..config import JudgeConfig, Secrets
from ..errors import ConfigError, JudgeError
from ..ops import log as logging_
from ..ops.log import host_of
from ..retry import RETRY_AFTER_CAP_S, retry_after_s, retryable_status
from .dialect import Dialect, ReasoningBudget, Refusal
from .http import BodyTooLarge, EntraToken, is_v1_url, make_sdk
from .limiter import Lease, Limiter, RateHeaders
from .parse import UnreadableVerdict
from .prompts import PromptScale
from .usage import Prices, Usage, read_usage


def log() -> Any:
    """The judge's logger, looked up per event: logging may be configured after this import."""
    return logging_.get_logger("judge")


# The server refuses this request for its content (its offer): 400 (content filter,
# context_length_exceeded), 413 (too large), 422 (unprocessable). Other requests may pass.
REFUSED_STATUS = frozenset({400, 413, 422})
MAX_DIALECT_STEPS = 6  # 400s that may change one request's dialect before it is refused as it is
BACKOFF_FIRST_S = 0.5  # the first retry waits up to this (full jitter), doubling each time
PAUSE_WITHOUT_HEADER_S = 1.0  # a 429 with no Retry-After: one rate window
AZURE_VARS = ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_DEPLOYMENT_NAME")


@dataclass
class JudgeStats:
    """Counters for metrics and benchmarks (one per Judge, shared by its calls)."""

    requests: int = 0  # HTTP attempts sent (or simulated by the stub)
    tokens: int = 0  # total tokens the server reported in `usage`
    charged_tokens: float = 0  # quota charged: prompt + max_tokens at intake, corrected from `usage`
    reasoning_tokens: int = 0  # hidden reasoning, part of the completion tokens (billed as output)
    cached_tokens: int = 0  # prompt tokens served from the server's prompt cache (billed at a discount)
    usd: float = 0.0  # at the configured prices, from each reply's usage
    dialect_refusals: int = 0  # 400s that taught an endpoint its dialect (the request was sent again)
    forgeries_penalised: int = 0  # judgements given the lowest score: the offer forged a verdict
    priced: bool = False  # prices are configured: `usd` is reported
    dedup_hits: int = 0  # criteria verdicts reused from an identical offer instead of paid for
    http_429: int = 0
    retries: int = 0
    failures: int = 0  # offers that still failed after their retries (judge_failed)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    paused: bool = False
    removed: bool = False  # a pool's endpoint taken out for good (its key or deployment refused)

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "tokens": self.tokens,
            "charged_tokens": round(self.charged_tokens),
            "reasoning_tokens": self.reasoning_tokens,
            "cached_tokens": self.cached_tokens,
            "usd": round(self.usd, 6),
            "forgeries_penalised": self.forgeries_penalised,
            "dedup_hits": self.dedup_hits,
            "http_429": self.http_429,
            "retries": self.retries,
            "failures": self.failures,
            "p50_ms": self.percentile(0.5),
            "p95_ms": self.percentile(0.95),
            "paused": self.paused,
        }


# ------------------------------------------------------------------ pure helpers


def percentile(values: Iterable[float], q: float) -> float:
    """The q-quantile (0-1) of `values` by nearest rank; nan when there are none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class OfferRejected(Exception):
    """The judge refused this offer's request (400, 413, 422): that offer fails, the run goes on.

    `content_filter`: the offer tripped the server's content filter (its own text is the
    cause, so it says nothing about the judge's health).
    """

    def __init__(self, message: str, *, content_filter: bool = False) -> None:
        super().__init__(message)
        self.content_filter = content_filter


def is_content_filter(e: openai.APIStatusError) -> bool:
    """Azure answers 400 `content_filter` when the offer (untrusted policy text) trips its filter."""
    text = _server_message(e).lower()
    return e.status_code == 400 and (getattr(e, "code", None) == "content_filter" or "content_filter" in text
                                     or "content management policy" in text)


class ReasoningCut(UnreadableVerdict):
    """A reasoning model spent its budget thinking and the reply came back cut (often empty).

    Not the offer's fault and not the endpoint's: the pool retries it once with a larger
    reasoning allowance (`Attempt.boost`); a second cut fails the offer naming the key."""


class DeadlineExceeded(Exception):
    """An attempt outlived `judge.timeout_s` in all (a server trickling its reply, a stuck proxy)."""


def reply_text(completion: Any, budget: str) -> str:
    """The completion's text; a 200 whose body is not a chat completion is a failed call.
    `budget`: the reply budget as sent (`max_tokens=200`), named when a reply is cut."""
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise UnreadableVerdict("the response has no choices")
    finish = getattr(choices[0], "finish_reason", None)
    if finish == "content_filter":  # the offer, quoted, tripped it
        raise OfferRejected("the judge's content filter withheld its reply about the offer", content_filter=True)
    if finish == "length":  # cut JSON; at temperature 0 a retry is cut alike: fail the offer, say which budget
        raise OfferRejected(f"the reply was cut at {budget}: raise judge.max_tokens "
                            "(per_criterion calls) or judge.max_tokens_per_offer (per_offer calls)")
    content = getattr(getattr(choices[0], "message", None), "content", None)
    if not isinstance(content, str):
        raise UnreadableVerdict("the response has no message content")
    return content


def is_cut(completion: Any) -> bool:
    choices = getattr(completion, "choices", None)
    return isinstance(choices, list) and bool(choices) and getattr(choices[0], "finish_reason", None) == "length"


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, (UnreadableVerdict, DeadlineExceeded)):
        return True
    if isinstance(exc, openai.APIStatusError):  # a redirect is not followed (the key stays home): tried again
        return retryable_status(exc.status_code) or is_redirect(exc)
    return isinstance(exc, openai.APIConnectionError)  # APITimeoutError included


def is_redirect(exc: BaseException) -> bool:
    """A 3xx: a proxy or a moved endpoint. Mid-run a passing fault (tried again, never followed);
    before a run, a URL to correct."""
    return isinstance(exc, openai.APIStatusError) and 300 <= exc.status_code < 400


def is_rate_limited(exc: BaseException) -> bool:
    """A 429: the quota pacing us, not the endpoint's ill health."""
    return isinstance(exc, openai.APIStatusError) and exc.status_code == 429


def is_name_error(exc: BaseException) -> bool:
    """A connection that failed because the host name does not resolve (not a passing DNS hiccup).

    At start-up that is a typo in the endpoint: retrying only delays the one line saying so.
    """
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 10:
        if isinstance(cause, socket.gaierror):
            return cause.errno != socket.EAI_AGAIN  # EAI_AGAIN: "temporary failure in name resolution"
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return False


def missing_credentials(secrets: Secrets) -> str:
    """Which variables to set, for a user with no (or half an) Azure/OpenAI judge set-up."""
    present = dict(zip(AZURE_VARS, (secrets.azure_api_key, secrets.azure_endpoint, secrets.azure_deployment)))
    missing = [name for name, value in present.items() if not value]
    if 0 < len(missing) < len(AZURE_VARS):
        return f"incomplete Azure OpenAI judge settings: set {', '.join(missing)}"
    return (
        "no judge credentials: set AZURE_OPENAI_API_KEY, AZURE_OPENAI_ENDPOINT and "
        "AZURE_DEPLOYMENT_NAME (Azure OpenAI), or OPENAI_API_KEY and optionally OPENAI_BASE_URL "
        "(any OpenAI-compatible server)"
    )


# ------------------------------------------------------------------ endpoints


@dataclass(frozen=True)
class EndpointSpec:
    """One judge deployment, resolved: where, which model, which key (never shown), its quota."""

    name: str
    kind: str  # azure | openai
    url: str = field(repr=False)  # may carry user:password@
    model: str  # the Azure deployment, or the OpenAI-compatible model
    api_version: str
    key: str = field(repr=False)  # "" with Entra ID
    key_var: str
    rpm: int  # 0: no quota
    tpm: int
    auth: str = "key"  # key | entra
    where: str = "judge"  # the config key that names it, for errors

    @property
    def host(self) -> str:
        return host_of(self.url)


def standard_endpoint(cfg: JudgeConfig, secrets: Secrets) -> EndpointSpec:
    """The one endpoint of the standard variables (no `[[judge.endpoints]]`)."""
    entra = cfg.auth == "entra"
    if entra and secrets.azure_endpoint and secrets.azure_deployment:  # Entra ID: no key to set
        return EndpointSpec(host_of(secrets.azure_endpoint), "azure", secrets.azure_endpoint,
                            secrets.azure_deployment, cfg.api_version, "", "AZURE_OPENAI_ENDPOINT",
                            cfg.rpm, cfg.tpm, auth="entra")
    if entra:
        raise ConfigError("judge.auth = \"entra\" signs in to Azure OpenAI: set AZURE_OPENAI_ENDPOINT "
                          "and AZURE_DEPLOYMENT_NAME (no key needed)")
    backend = secrets.judge_backend
    if backend == "none":
        raise ConfigError(f"{missing_credentials(secrets)}; or judge with --judge stub")
    if backend == "azure":
        return EndpointSpec(host_of(secrets.azure_endpoint), "azure", secrets.azure_endpoint,
                            secrets.azure_deployment, cfg.api_version, secrets.azure_api_key,
                            "AZURE_OPENAI_API_KEY", cfg.rpm, cfg.tpm)
    url = secrets.openai_base_url or "https://api.openai.com/v1"  # "" would be taken as the URL
    return EndpointSpec(host_of(url), "openai", url, cfg.model, cfg.api_version, secrets.openai_api_key,
                        "OPENAI_API_KEY", cfg.rpm, cfg.tpm)


def pool_endpoints(cfg: JudgeConfig, env: Mapping[str, str]) -> list[EndpointSpec]:
    """`[[judge.endpoints]]` resolved; ConfigError naming `judge.endpoints[i].key` when one is unusable."""
    specs: list[EndpointSpec] = []
    for i, e in enumerate(cfg.endpoints):
        where = f"judge.endpoints[{i}]"
        name = e.name or f"endpoint-{i}"
        if not e.url:
            raise ConfigError(f"'{where}.url' is required (the Azure endpoint or an OpenAI-compatible base URL)")
        if e.kind == "azure" and not e.deployment:
            raise ConfigError(f"'{where}.deployment' is required for kind = \"azure\"")
        auth = e.auth or cfg.auth
        if auth == "entra" and e.kind != "azure":
            raise ConfigError(f"'{where}.auth': Entra ID signs in to Azure OpenAI only (kind = \"azure\")")
        key = "" if auth == "entra" else _endpoint_key(e.api_key_env, env, where)
        if name in {s.name for s in specs}:
            raise ConfigError(f"'{where}.name': '{name}' names two endpoints")
        model = e.deployment if e.kind == "azure" else (e.model or cfg.model)
        specs.append(EndpointSpec(name, e.kind, e.url, model, e.api_version or cfg.api_version, key,
                                  e.api_key_env, e.rpm, e.tpm, auth=auth, where=where))
    return specs


def _endpoint_key(var: str, env: Mapping[str, str], where: str) -> str:
    if not var:
        raise ConfigError(f"'{where}.api_key_env' is required: the NAME of the variable holding its key")
    key = env.get(var, "")
    if not key:
        raise ConfigError(f"'{where}.api_key_env': the environment variable {var} is not set")
    return key


# ------------------------------------------------------------------ the client


class JudgeClient:
    """One endpoint's Chat Completions through the openai SDK, paced by its limiter.

    `exchange` is one HTTP attempt under a lease the caller holds: the pool (pool.py) routes,
    retries and parses, for runs and `judge check` alike. The endpoint's dialect (`dialect.py`)
    is learnt from its 400s, its reasoning allowance from its replies; its usage is read as
    untrusted figures (`usage.py`) and priced.
    """

    def __init__(self, cfg: JudgeConfig, endpoint: Secrets | EndpointSpec, limiter: Limiter, stats: JudgeStats,
                 own: JudgeStats | None = None) -> None:
        self.cfg, self.limiter, self.stats = cfg, limiter, stats
        self.scale = PromptScale()  # a pool shares one among its endpoints (the same judge model)
        self.own = own  # this endpoint's counters when it is one of a pool
        spec = endpoint if isinstance(endpoint, EndpointSpec) else standard_endpoint(cfg, endpoint)
        self.spec, self.name, self.backend = spec, spec.name, spec.kind
        self.endpoint, self.model = spec.host, spec.model
        self._key, self._key_var = spec.key, spec.key_var
        if not (spec.key.isascii() and spec.key.isprintable()):  # httpx would fail every send with it
            raise ConfigError(f"{spec.key_var} holds a character an HTTP header cannot carry (non-ASCII or "
                              "a control character): paste the key again")
        self._entra = EntraToken(spec.where if cfg.endpoints else spec.name) if spec.auth == "entra" else None
        self._sdk = make_sdk(spec.kind, spec.url, spec.model, spec.api_version, spec.key, self._entra, cfg.timeout_s)
        logging_.refresh_secrets([self._key])  # a key passed in, not from os.environ, is redacted too
        self.api = "azure-v1" if spec.kind == "azure" and is_v1_url(spec.url) else spec.kind
        first_format = cfg.response_format if cfg.json_mode else "text"
        self.dialect: Dialect = dialects.initial(cfg.dialect, cfg.reasoning_effort, first_format)
        self._tried: set[Dialect] = {self.dialect}
        self.budget = ReasoningBudget(cfg.max_reasoning_tokens)
        self.prices = Prices(cfg.price_input_per_mtok, cfg.price_cached_input_per_mtok, cfg.price_output_per_mtok)
        for counters in (stats, own):
            if counters is not None:
                counters.priced = self.prices.known
        self.served_model = ""  # the model the server says answered (`model` of a reply)
        self._announced: Dialect | None = None
        self._usage_warned = False

    @property
    def json_mode(self) -> bool:
        return self.dialect.response_format != "text"

    def _count(self, name: str, n: float = 1) -> None:
        for stats in (self.stats, self.own):
            if stats is not None:
                setattr(stats, name, getattr(stats, name) + n)

    # ------------------------------------------------------------ budgets

    def reply_budget(self, max_tokens: int, boost: bool = False) -> int:
        """Tokens the reply may take in this endpoint's dialect: the answer's budget, plus the
        reasoning allowance for a reasoning model (`boost`: the larger one after a cut reply)."""
        if self.dialect.kind == "classic":
            return max_tokens
        effort = self.dialect.effort
        return max_tokens + (self.budget.boosted(effort) if boost else self.budget.allowance(effort))

    def charge(self, messages: list[dict], max_tokens: int, boost: bool = False) -> int:
        """What a call is charged at intake here: the prompt (scaled) plus the reply budget."""
        return self.scale.charge(messages, self.reply_budget(max_tokens, boost))

    # ------------------------------------------------------------ calls

    async def exchange(self, messages: list[dict], lease: Lease, max_tokens: int, schema: dict | None = None,
                       boost: bool = False) -> str:
        """One HTTP attempt under `lease` for an answer of at most `max_tokens` (plus the reasoning
        allowance in the reasoning dialect): the reply's text, or the error (a 429 backs this
        endpoint off). `schema`: the strict json_schema format of the reply, where taken."""
        self._count("charged_tokens", lease.estimated)  # charged at intake, corrected from usage below
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                raw, budget = await self._send(messages, lease, max_tokens, schema, boost)
        except TimeoutError:
            raise DeadlineExceeded(f"no complete answer within judge.timeout_s = {self.cfg.timeout_s:g} s") from None
        except openai.APIStatusError as e:
            self._observe(e.response.headers)
            if e.status_code == 429:
                self._count("http_429")
                self._count("charged_tokens", -lease.estimated)  # refused at intake: not charged
                lease.refuse()  # nor kept in the limiter (a request re-sent in a learnt dialect too: one lease)
                wait = retry_after_s(e.response.headers)
                self.limiter.backoff(PAUSE_WITHOUT_HEADER_S if wait is None else min(wait, RETRY_AFTER_CAP_S))
            if is_retryable(e):
                raise
            if e.status_code in REFUSED_STATUS:
                raise self.rejection(e) from None
            raise self.config_error(e) from None
        # A body that is not JSON, or nests past the decoder's stack: the server's fault, retried.
        # Only parsing is caught: a ValueError while sending is our bug, never a "malformed reply".
        try:
            completion = raw.parse()
        except (ValueError, RecursionError, openai.APIResponseValidationError) as e:
            raise UnreadableVerdict(f"malformed response body ({type(e).__name__})") from None
        self._observe(raw.headers)
        for stats in (self.stats, self.own):
            if stats is not None:
                stats.latencies_ms.append((time.monotonic() - started) * 1000)
        usage = self._settle(completion, messages, lease, budget)  # first: a cut reply was charged too
        self._announce(completion)
        return self._text(completion, budget, usage, boost)

    async def _send(self, messages: list[dict], lease: Lease, max_tokens: int, schema: dict | None,
                    boost: bool) -> tuple[Any, int]:
        """The request in this endpoint's dialect; a 400 that teaches the dialect (`dialect.adapt`)
        changes it and sends the request again, at most MAX_DIALECT_STEPS times. Returns the raw
        response and the reply budget it was sent with."""
        for _ in range(MAX_DIALECT_STEPS):
            sent = self.dialect
            budget = self.reply_budget(max_tokens, boost)
            body = dialects.request_body(sent, self.model, messages, max_tokens, budget - max_tokens, schema)
            self._count("requests")
            try:
                raw = await self._sdk.chat.completions.with_raw_response.create(**body, timeout=self.cfg.timeout_s)
            except openai.BadRequestError as e:
                # another call in flight may have learnt the dialect meanwhile: send it in that one
                if self.dialect == sent and not self._learn_dialect(e):
                    raise
                continue
            return raw, budget
        raise JudgeError(self.scrub(f"the judge at {self.endpoint} refused {MAX_DIALECT_STEPS} dialects in a row "
                                    "(judge.dialect = auto): set judge.dialect and judge.reasoning_effort by hand"))

    def _learn_dialect(self, e: openai.BadRequestError) -> bool:
        """A 400 about a parameter or a value: move to the dialect it asks for. False: not about
        the dialect, or a dialect already tried (a cycle): the 400 stands."""
        refusal = Refusal.of(e.body, str(e.message))
        new = dialects.adapt(self.dialect, refusal, self.cfg.reasoning_effort)
        if new is None or new in self._tried:
            return False
        self._tried.add(new)
        self._count("dialect_refusals")
        log().info("judge_dialect_refused", endpoint=self.name, param=refusal.param or None,
                   reason=self.scrub(refusal.message[:200]), was=self.dialect.describe(), now=new.describe())
        self.dialect = new
        return True

    def _settle(self, completion: Any, messages: list[dict], lease: Lease, budget: int) -> Usage | None:
        """The reply's usage, if sane: the charge settled (prompt + reply budget, as at intake),
        the counters, the dollars and the reasoning allowance learnt."""
        usage = read_usage(getattr(completion, "usage", None), math.ceil(lease.estimated) + budget)
        if usage is None:
            if not self._usage_warned:
                self._usage_warned = True
                log().warning("judge_usage_ignored", endpoint=self.name,
                              reason="the reply's usage is missing or not sane token counts: the estimate stands")
            return None
        actual = usage.prompt + budget  # the quota charged the whole reply budget at intake
        self.scale.learn(messages, usage.prompt)
        self._count("charged_tokens", actual - lease.estimated)
        lease.settle(actual)
        self._count("tokens", usage.total)
        self._count("reasoning_tokens", usage.reasoning)
        self._count("cached_tokens", usage.cached)
        if self.prices.known:
            self._count("usd", self.prices.usd(usage))
        if self.dialect.kind == "reasoning":
            self.budget.learn(usage.reasoning)
        return usage

    def _text(self, completion: Any, budget: int, usage: Usage | None, boost: bool) -> str:
        if self.dialect.kind == "classic" or not is_cut(completion):
            return reply_text(completion, f"max_tokens={budget}")
        spent = f"{usage.reasoning} reasoning tokens" if usage else "its reasoning"
        if not boost:  # retried once with a larger allowance (the pool's Attempt.boost)
            raise ReasoningCut(f"the reply was cut at max_completion_tokens={budget} after {spent}")
        raise OfferRejected(f"the reply was cut at max_completion_tokens={budget} after {spent}, twice: "
                            "raise judge.max_reasoning_tokens or lower judge.reasoning_effort")

    def learnt(self) -> dict[str, Any]:
        """What this endpoint turned out to speak (`judge check` prints it)."""
        return {**self.dialect.describe(), "served_model": self.served_model or None, "api": self.api}

    def _announce(self, completion: Any) -> None:
        """`judge_dialect`, once per endpoint and dialect: what works here and which model answered."""
        served = getattr(completion, "model", None)
        if isinstance(served, str) and served:
            self.served_model = served[:100]
        if self._announced == self.dialect:
            return
        self._announced = self.dialect
        log().info("judge_dialect", endpoint=self.name, model=self.served_model or self.model, api=self.api,
                   temperature=self.dialect.temperature, **self.dialect.describe())

    def _observe(self, headers: Any) -> None:
        try:
            seen = RateHeaders.parse(headers)
        except Exception:  # headers are the server's text: never let them fail a call
            return
        if not seen.empty:
            self.limiter.observe(seen, self.limiter.now())

    # ------------------------------------------------------------ errors users read

    def scrub(self, text: str) -> str:
        """`text` without our key (servers may echo it) and with every known secret redacted."""
        if self._key:
            text = text.replace(self._key, logging_.REDACTED)
        return logging_.redact(text)

    def rejection(self, e: openai.APIStatusError) -> OfferRejected:
        if is_content_filter(e):
            return OfferRejected(f"the judge's content filter refused the offer ({self.endpoint})",
                                 content_filter=True)
        message = _server_message(e)
        hint = ""
        if "max_completion_tokens" in message and "nrecognized" in message:
            hint = ("; this api-version predates reasoning models: set judge.api_version to 2024-12-01-preview "
                    "or later, or use the v1 URL (https://RESOURCE.openai.azure.com/openai/v1)")
        return OfferRejected(self.scrub(f"the judge refused the request for this offer (HTTP {e.status_code} "
                                        f"from {self.endpoint}): {message[:200]}{hint}"))

    def config_error(self, e: openai.APIStatusError) -> JudgeError:
        status, where = e.status_code, self.endpoint
        if status == 401 and self.spec.auth == "entra":
            msg = (f"authentication failed at {where} (HTTP 401): the Entra ID token was refused; check the "
                   "identity's role on the resource (Cognitive Services OpenAI User)")
        elif status == 401:
            msg = f"authentication failed at {where} (HTTP 401): check {self._key_var}"
        elif status == 403:
            msg = f"access denied at {where} (HTTP 403): the key may not use '{self.model}'"
        elif status == 404 and self.backend == "azure" and self._key_var != "AZURE_OPENAI_API_KEY":
            msg = f"deployment '{self.model}' not found at {where} (HTTP 404): check judge.endpoints '{self.name}'"
        elif status == 404 and self.backend == "azure":
            msg = (f"deployment '{self.model}' not found at {where} (HTTP 404): "
                   "check AZURE_DEPLOYMENT_NAME and AZURE_OPENAI_ENDPOINT")
        elif status == 404:
            msg = f"model '{self.model}' or its URL not found at {where} (HTTP 404): check judge.model and OPENAI_BASE_URL"
        else:
            msg = f"request rejected by {where} (HTTP {status}): {_server_message(e)[:300]}"
        return JudgeError(self.scrub(msg))

    def describe(self, exc: BaseException) -> str:
        """One line on a transient failure, for logs and judge_failed reasons."""
        if isinstance(exc, UnreadableVerdict):
            text = f"unparseable reply: {exc}"
        elif isinstance(exc, OfferRejected):
            text = str(exc)
        elif is_redirect(exc):
            where = host_of(str(exc.response.headers.get("location", ""))) or "elsewhere"
            text = (f"HTTP {exc.status_code} from {self.endpoint}: redirected to {where}, not followed "
                    "(the key is sent only where it was configured): set the endpoint's final URL")
        elif isinstance(exc, openai.APIStatusError):
            text = f"HTTP {exc.status_code} from {self.endpoint}: {_server_message(exc)[:200]}"
        elif isinstance(exc, DeadlineExceeded):  # the same words as a read timeout: the same cure
            text = f"no answer from {self.endpoint} within {self.cfg.timeout_s:g} s"
        elif isinstance(exc, openai.APIConnectionError) and isinstance(exc.__cause__, BodyTooLarge):
            text = f"{self.endpoint} sent too much: {exc.__cause__}"
        elif isinstance(exc, openai.APITimeoutError):
            text = f"no answer from {self.endpoint} within {self.cfg.timeout_s:g} s"
        elif isinstance(exc, openai.APIConnectionError):
            text = f"cannot connect to {self.endpoint}: {_root_cause(exc)}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        return self.scrub(text)

    async def aclose(self) -> None:
        await self._sdk.close()
        if self._entra is not None:
            await self._entra.aclose()


def _server_message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(body.get("message"), str):
            return body["message"]
    return str(e.message)


def _root_cause(exc: BaseException) -> str:
    """The innermost cause's text: 'Name or service not known' says more than 'Connection error.'"""
    seen: list[BaseException] = [exc]
    while seen[-1].__cause__ is not None and len(seen) < 10:
        seen.append(seen[-1].__cause__)
    inner = seen[-1]
    return str(inner) or type(inner).__name__
