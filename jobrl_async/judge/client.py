"""The judge's HTTP side: the real openai SDK, our retries, the shared limiter.

One `ask` is one criterion: take a limiter slot, call Chat Completions, parse the reply.
Transient failures (429, 408/409, 5xx, timeouts, connection errors, unparseable replies)
are retried here with the shared policy (`jobrl_async.retry`: backoff with full jitter, at
least what the server's `retry-after-ms` / `Retry-After` asks); the SDK's own retries are off
so nothing retries twice. A 429 also pauses the shared limiter for every caller.

Never retried: a request the server refuses for what it holds (400, 413, 422: a content
filter, a prompt over the context length) is `OfferRejected`, which fails that offer only;
anything else (401, 403, 404: a key, a permission, a deployment) is a configuration error,
a `JudgeError` that names the endpoint and the variable to fix, never the key.
"""

from __future__ import annotations

import math
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import openai

from .. import log as logging_
from ..config import JudgeConfig, Secrets
from ..errors import ConfigError, JudgeError
from ..records import CriterionVerdict
from ..retry import RETRY_AFTER_CAP_S, retry_after_s, retryable_status, retrying
from .limiter import Lease, Limiter, RateHeaders
from .parse import UnreadableVerdict, parse_reply
from .prompts import PromptScale


def log() -> Any:
    """The judge's logger, looked up per event: logging may be configured after this import."""
    return logging_.get_logger("judge")


# The server refuses this request for its content (its offer): 400 (content filter,
# context_length_exceeded), 413 (too large), 422 (unprocessable). Other requests may pass.
REFUSED_STATUS = frozenset({400, 413, 422})
BACKOFF_FIRST_S = 0.5  # the first retry waits up to this (full jitter), doubling each time
PAUSE_WITHOUT_HEADER_S = 1.0  # a 429 with no Retry-After: one rate window
AZURE_VARS = ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_DEPLOYMENT_NAME")


@dataclass
class JudgeStats:
    """Counters for metrics and benchmarks (one per Judge, shared by its calls)."""

    requests: int = 0  # HTTP attempts sent (or simulated by the stub)
    tokens: int = 0  # total tokens the server reported in `usage`
    charged_tokens: float = 0  # quota charged: prompt + max_tokens at intake, corrected from `usage`
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


def reply_text(completion: Any, max_tokens: int) -> str:
    """The completion's text; a 200 whose body is not a chat completion is a failed call."""
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise UnreadableVerdict("the response has no choices")
    finish = getattr(choices[0], "finish_reason", None)
    if finish == "content_filter":  # the offer, quoted, tripped it
        raise OfferRejected("the judge's content filter withheld its reply about the offer", content_filter=True)
    if finish == "length":  # cut JSON; at temperature 0 a retry is cut alike: fail the offer, say which budget
        raise OfferRejected(f"the reply was cut at max_tokens={max_tokens}: raise judge.max_tokens "
                            "(per_criterion calls) or judge.max_tokens_per_offer (per_offer calls)")
    content = getattr(getattr(choices[0], "message", None), "content", None)
    if not isinstance(content, str):
        raise UnreadableVerdict("the response has no message content")
    return content


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, UnreadableVerdict):
        return True
    if isinstance(exc, openai.APIStatusError):
        return retryable_status(exc.status_code)
    return isinstance(exc, openai.APIConnectionError)  # APITimeoutError included


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


def host_of(url: str) -> str:
    parts = urlsplit(url if "//" in url else f"//{url}")
    host = parts.hostname or url
    return f"{host}:{parts.port}" if parts.port else host


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
    key: str = field(repr=False)
    key_var: str
    rpm: int
    tpm: int

    @property
    def host(self) -> str:
        return host_of(self.url)


def standard_endpoint(cfg: JudgeConfig, secrets: Secrets) -> EndpointSpec:
    """The one endpoint of the standard variables (no `[[judge.endpoints]]`)."""
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
        if not e.api_key_env:
            raise ConfigError(f"'{where}.api_key_env' is required: the NAME of the variable holding its key")
        key = env.get(e.api_key_env, "")
        if not key:
            raise ConfigError(f"'{where}.api_key_env': the environment variable {e.api_key_env} is not set")
        if name in {s.name for s in specs}:
            raise ConfigError(f"'{where}.name': '{name}' names two endpoints")
        model = e.deployment if e.kind == "azure" else (e.model or cfg.model)
        specs.append(EndpointSpec(name, e.kind, e.url, model, e.api_version or cfg.api_version, key,
                                  e.api_key_env, e.rpm, e.tpm))
    return specs


# ------------------------------------------------------------------ the client


class JudgeClient:
    """One endpoint's Chat Completions through the openai SDK, paced by its limiter.

    `exchange` is one HTTP attempt under a lease the caller holds (the pool routes and
    retries); `ask` is the self-contained way: its own limiter slot, retries and parsing.
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
        if spec.kind == "azure":
            self._sdk: openai.AsyncOpenAI = openai.AsyncAzureOpenAI(
                azure_endpoint=spec.url, api_key=spec.key, api_version=spec.api_version,
                azure_deployment=spec.model, max_retries=0, timeout=cfg.timeout_s)
        else:
            self._sdk = openai.AsyncOpenAI(api_key=spec.key, base_url=spec.url, max_retries=0, timeout=cfg.timeout_s)
        logging_.refresh_secrets([self._key])  # a key passed in, not from os.environ, is redacted too
        self.json_mode = cfg.json_mode

    def _count(self, name: str, n: float = 1) -> None:
        for stats in (self.stats, self.own):
            if stats is not None:
                setattr(stats, name, getattr(stats, name) + n)

    async def ask(self, criterion: str, messages: list[dict], attempts: int | None = None,
                  retry_if: Callable[[BaseException], bool] = is_retryable) -> CriterionVerdict:
        """One criterion's verdict; raises JudgeError (configuration), OfferRejected, or the
        last transient error once `attempts` (default: 1 + judge.max_retries) are spent."""
        retried = retrying(attempts=attempts or self.cfg.max_retries + 1, first_s=BACKOFF_FIRST_S,
                           max_s=self.cfg.backoff_max_s, retry_if=retry_if, asked=_asked, on_retry=self._on_retry)
        return await retried(self._attempt, criterion, messages)

    async def _attempt(self, criterion: str, messages: list[dict]) -> CriterionVerdict:
        async with self.limiter.slot(self.scale.charge(messages, self.cfg.max_tokens)) as lease:
            text = await self.exchange(messages, lease, self.cfg.max_tokens)
        return parse_reply(criterion, text)

    async def exchange(self, messages: list[dict], lease: Lease, max_tokens: int) -> str:
        """One HTTP attempt under `lease` for a reply of at most `max_tokens`: the reply's text, or
        the error (a 429 backs this endpoint off)."""
        self._count("charged_tokens", lease.estimated)  # charged at intake, corrected from usage below
        started = time.monotonic()
        try:
            raw = await self._create(messages, max_tokens)
        except openai.APIStatusError as e:
            self._observe(e.response.headers)
            if e.status_code == 429:
                self._count("http_429")
                self._count("charged_tokens", -lease.estimated)  # refused at intake: not charged
                lease.refuse()  # nor kept in the limiter (the JSON-mode fallback's too: one lease)
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
        usage = getattr(completion, "usage", None)  # settled first: a refused reply was charged too
        if isinstance(getattr(usage, "prompt_tokens", None), int):
            # The quota is charged at intake as prompt + max_tokens: correct our prompt
            # estimate with the server's count, but keep the completion budget charged.
            actual = usage.prompt_tokens + max_tokens
            self.scale.learn(messages, usage.prompt_tokens)
            self._count("charged_tokens", actual - lease.estimated)
            lease.settle(actual)
            self._count("tokens", getattr(usage, "total_tokens", 0) or 0)
        return reply_text(completion, max_tokens)

    def _observe(self, headers: Any) -> None:
        try:
            seen = RateHeaders.parse(headers)
        except Exception:  # headers are the server's text: never let them fail a call
            return
        if not seen.empty:
            self.limiter.observe(seen, self.limiter.now())

    async def _create(self, messages: list[dict], max_tokens: int) -> Any:
        self._count("requests")
        try:
            return await self._sdk.chat.completions.with_raw_response.create(**self._request(messages, max_tokens))
        except openai.BadRequestError as e:
            if not (self.json_mode and "response_format" in _server_message(e)):
                raise
        # The server has no JSON mode: drop it for good; parse_reply copes with prose anyway.
        self.json_mode = False
        log().warning("judge_json_mode_off", endpoint=self.endpoint, model=self.model)
        self._count("requests")
        return await self._sdk.chat.completions.with_raw_response.create(**self._request(messages, max_tokens))

    def _request(self, messages: list[dict], max_tokens: int) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens,
            "timeout": self.cfg.timeout_s,
        }
        if self.json_mode:
            request["response_format"] = {"type": "json_object"}
        return request

    def _on_retry(self, attempt: int, wait: float, exc: BaseException | None) -> None:
        self._count("retries")
        log().debug("judge_retry", attempt=attempt, wait_s=round(wait, 3), reason=self.describe(exc) if exc else "")

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
        return OfferRejected(self.scrub(f"the judge refused the request for this offer (HTTP {e.status_code} "
                                        f"from {self.endpoint}): {_server_message(e)[:200]}"))

    def config_error(self, e: openai.APIStatusError) -> JudgeError:
        status, where = e.status_code, self.endpoint
        if status == 401:
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
        elif isinstance(exc, openai.APIStatusError):
            text = f"HTTP {exc.status_code} from {self.endpoint}: {_server_message(exc)[:200]}"
        elif isinstance(exc, openai.APITimeoutError):
            text = f"no answer from {self.endpoint} within {self.cfg.timeout_s:g} s"
        elif isinstance(exc, openai.APIConnectionError):
            text = f"cannot connect to {self.endpoint}: {_root_cause(exc)}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        return self.scrub(text)

    async def aclose(self) -> None:
        await self._sdk.close()


def _asked(exc: BaseException) -> float | None:
    """The wait the server asked for with its error (a 429's or 503's Retry-After)."""
    return retry_after_s(exc.response.headers) if isinstance(exc, openai.APIStatusError) else None


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
