"""A local Chat Completions server (the LLM judge) for tests and `bench judge`: both URL shapes.

    POST /v1/chat/completions                                   Authorization: Bearer KEY
    POST /openai/deployments/{name}/chat/completions?api-version=V   api-key: KEY

It answers like the real thing (Chat Completions JSON with `usage`), deterministically: each
criterion's answer is scripted (`answers`) or derived from a hash of the request; a request
asking several criteria at once (a `Criteria: a, b` line, `judge.calls = per_offer`) gets one
object keyed by criterion. It can be told to be slow (`latency_ms`), to enforce quotas per
1-second window as Azure does (`rpm`, and `tpm` charged at intake as prompt + `max_tokens`;
429 with `retry-after-ms` beyond them), to send `x-ratelimit-*` headers (`rate_headers`,
computed when it answers, after its latency; `header_overrides` for absurd ones), to
share its quota with another client using `other_share` of each window, to be down (`down`,
500s, or `refuse_connections`), and to misbehave
once or N times (`inject`: 429, 500, 503, hang, malformed / fenced / prose-wrapped / deeply
nested JSON, a deeply nested body, two different answers, a key given twice, a content filter on the prompt or
on the reply, a context-length 400, a 413, and the 401/403/404 of a rotated key, a lost
permission or a deleted deployment). Faults queue up in order, so "the next 3 requests fail
with 500, every one after with 401" is two `inject`s; `criterion=` aims a fault at one
criterion's requests, so that it fails exactly one offer per use. Every
request is recorded with its arrival and finish time (`time.monotonic`) so a test can see
overlap; the key is never recorded. Runs on 127.0.0.1, port 0, in its own thread and loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web

from ..flow.records import CRITERIA
from .reasoning import REASONING_TOKENS, Family, PromptCache, prompt_text, reasoning_tokens, refusal, reply_budget
from .server import Fault, Faults, Served, error_reply, json_reply, too_many

FaultKind = Literal[
    "429", "500", "503", "hang",  # transient
    "malformed", "fenced", "prose", "html", "nested", "nested_body", "two_answers",  # odd replies
    "content_filter", "filtered_reply", "context_length", "413",  # this offer refused
    "401", "403", "404",  # configuration
    "missing_criterion", "duplicate_criterion", "extra_criterion", "echo_offer_verdict",  # per-offer replies
    "redirect", "huge_body", "trickle",  # hostile: a 307 elsewhere, 5 MB streamed, 16 bytes every 0.5 s
    "duplicate_keys",  # a per-criterion reply giving its answer and score twice
]


@dataclass
class RecordedRequest:
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # without Authorization / api-key
    body: Any
    criterion: str | None
    arrived: float
    finished: float = math.nan
    status: int = 0


@dataclass
class FakeChatServer(Served):
    api_key: str = "fake-judge-key"
    deployments: tuple[str, ...] = ("judge",)
    latency_ms: float = 0.0
    rpm: float = 0.0  # enforced per 1-second window as rpm/60; 0: no limit
    tpm: float = 0.0  # enforced per 1-second window as tpm/60, charged at intake; 0: no limit
    rate_headers: bool = False  # x-ratelimit-limit/remaining/reset-requests/-tokens on every reply
    header_overrides: dict[str, str] = field(default_factory=dict)  # sent on every reply, over the above
    other_share: float = 0.0  # another client's use of each window's quota, spread over the window
    charged_tokens: float = 0.0  # tokens charged at intake for the requests admitted
    down: bool = False  # every request answers 500 until set back
    reject_json_mode: bool = False  # 400 on response_format, like servers without JSON mode
    json_schema: bool = True  # takes response_format json_schema (else 400, as older models)
    family: Family = "classic"  # a reasoning family answers as gpt-5 / gpt-5.1 / o1-mini do (reasoning.py)
    served_model: str = ""  # the `model` of every reply ("" = the request's)
    entra_token: str = ""  # a bearer token accepted on the Azure paths, as Entra ID's
    prompt_cache: PromptCache = field(default_factory=PromptCache)
    reasoning_means: dict[str, float] = field(default_factory=lambda: dict(REASONING_TOKENS))  # by effort
    usage_override: dict[str, Any] = field(default_factory=dict)  # merged into every reply's usage
    redirect_to: str = ""  # where a "redirect" fault sends the client (307, the request's path)
    usage_totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("prompt", "completion", "reasoning", "cached"), 0))  # what the replies reported, summed
    answers: dict[str, dict] = field(default_factory=dict)  # criterion -> the JSON it answers
    requests: list[RecordedRequest] = field(default_factory=list)
    http_429: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        self._faults = Faults()
        self._lock = threading.Lock()
        self._window = (-1, 0, 0.0)  # (second, requests, tokens admitted in it)

    # ------------------------------------------------------------ scripting

    def inject(self, kind: FaultKind, times: int = 1, *, criterion: str | None = None,
               retry_after_ms: int = 200, hang_s: float = 3.0) -> None:
        """The next `times` requests (about `criterion`, if given: one fault per offer judged)
        misbehave as `kind`, in order. `retry_after_ms`: what a 429 asks; `hang_s`: how long a
        hang lasts (past the client's timeout)."""
        self._faults.add(Fault(kind, times, criterion, retry_after_ms, hang_s))

    def _admit(self, now: float, tokens: float) -> float:
        """0 when the request fits this second's quotas (charged then), else seconds until the next window."""
        second = math.floor(now)
        others = self.other_share * (now - second)  # the other client's use so far in this window
        with self._lock:
            start, count, used = self._window
            if start != second:
                count, used = 0, 0.0
            over_requests = self.rpm > 0 and count + 1 > self.rpm / 60.0 * (1 - others) + 1e-9
            over_tokens = self.tpm > 0 and used + tokens > self.tpm / 60.0 * (1 - others) + 1e-9
            if over_requests or over_tokens:
                self._window = (second, count, used)
                return second + 1 - now
            self._window = (second, count + 1, used + tokens)
            self.charged_tokens += tokens
            return 0.0

    def _rate_headers(self, now: float) -> dict[str, str]:
        """What is left of this window, as OpenAI and Azure report it (limits per minute)."""
        if not self.rate_headers:
            return {}
        second = math.floor(now)
        others = self.other_share * (now - second)
        with self._lock:
            start, count, used = self._window
        if start != second:
            count, used = 0, 0.0
        reset = f"{max(1, math.ceil((second + 1 - now) * 1000))}ms"
        headers = {"x-ratelimit-reset-requests": reset, "x-ratelimit-reset-tokens": reset}
        if self.rpm > 0:
            left = self.rpm / 60.0 * (1 - others) - count
            headers |= {"x-ratelimit-limit-requests": str(int(self.rpm)),
                        "x-ratelimit-remaining-requests": str(max(0, math.floor(left)))}
        if self.tpm > 0:
            left = self.tpm / 60.0 * (1 - others) - used
            headers |= {"x-ratelimit-limit-tokens": str(int(self.tpm)),
                        "x-ratelimit-remaining-tokens": str(max(0, math.floor(left)))}
        return headers

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def azure_endpoint(self) -> str:
        return self.url

    # ------------------------------------------------------------ HTTP

    async def _openai(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        ok = auth == f"Bearer {self.api_key}"
        return await self._complete(request, ok, known=True)

    async def _azure(self, request: web.Request) -> web.Response:
        if "api-version" not in request.query:
            return _error(400, "missing required query parameter api-version", "BadRequest")
        known = request.match_info["name"] in self.deployments
        return await self._complete(request, self._azure_auth(request), known)

    async def _azure_v1(self, request: web.Request) -> web.Response:
        """Azure's v1 API: no api-version, the deployment named as `model`, a key or a bearer token."""
        if "api-version" in request.query:
            return _error(400, "api-version is not allowed with the v1 API", "BadRequest")
        return await self._complete(request, self._azure_auth(request), known=None)

    def _azure_auth(self, request: web.Request) -> bool:
        bearer = request.headers.get("Authorization", "")
        return (request.headers.get("api-key", "") == self.api_key or bearer == f"Bearer {self.api_key}"
                or bool(self.entra_token) and bearer == f"Bearer {self.entra_token}")

    async def _complete(self, request: web.Request, auth_ok: bool, known: bool) -> web.Response:
        try:
            body = await request.json(loads=orjson.loads)
        except ValueError:
            body = None
        rec = RecordedRequest(
            path=request.path,
            query=dict(request.query),
            headers={k: v for k, v in request.headers.items() if k.lower() not in ("authorization", "api-key")},
            body=body,
            criterion=_criterion_of(body),
            arrived=time.monotonic(),
        )
        with self._lock:
            self.requests.append(rec)
        try:
            response = await self._answer(request, body, rec.criterion, auth_ok, known)
        finally:
            rec.finished = time.monotonic()
        rec.status = response.status
        return response

    async def _answer(
        self, request: web.Request, body: Any, criterion: str | None, auth_ok: bool, known: bool | None
    ) -> web.Response:
        if not auth_ok:
            # Echo what was sent, as some servers do: the client must never repeat it.
            sent = request.headers.get("api-key") or request.headers.get("Authorization", "")
            return _error(401, f"Incorrect API key provided: {sent}.", "invalid_api_key")
        if known is None:  # the v1 path names the deployment in the body
            known = isinstance(body, dict) and body.get("model") in self.deployments
        if not known:
            return _error(404, "The API deployment for this resource does not exist.", "DeploymentNotFound")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is a required property", "invalid_request_error")
        if (refused := self._refusal(request, body)) is not None:
            return refused
        if self.down:
            return _error(500, "The server had an error while processing your request.", "server_error")
        fault = self._faults.take(criterion)
        if fault and fault.kind == "429":  # refused before intake: a 429 charges no quota
            return self._too_many(fault.retry_after_ms)
        if (wait := self._admit(time.monotonic(), intake_tokens(body))) > 0:
            return self._with_headers(self._too_many(math.ceil(wait * 1000)))
        if fault and fault.kind == "html":  # a gateway's error page with a 200
            return web.Response(status=200, text="<html><body>Bad gateway</body></html>", content_type="text/html")
        if fault and fault.kind == "nested_body":  # a 200 whose JSON body nests past any parser's stack
            return web.Response(status=200, text="[" * 3000, content_type="application/json")
        if fault and fault.kind in _ERRORS:
            return _error(*_ERRORS[fault.kind])
        if fault and fault.kind == "redirect":  # a proxy sending the request (and its headers) elsewhere
            raise web.HTTPTemporaryRedirect(self.redirect_to + request.path_qs)
        if fault and fault.kind in ("huge_body", "trickle"):
            return await _hostile_body(request, fault.kind)
        if fault and fault.kind == "hang":
            await asyncio.sleep(fault.hang_s)
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        asked = _criteria_of(body)
        if asked:
            content = self._offer_content(asked, body, fault.kind if fault else None)
        else:
            content = self._content(criterion, body, fault.kind if fault else None)
        completion = _completion(body, content, cut=fault is None,  # a scripted fault is sent as scripted
                                 reasoning=reasoning_tokens(self.family, body, self.reasoning_means),
                                 cached=self.prompt_cache.cached_tokens(prompt_text(body)),
                                 model=self.served_model)
        self._count_usage(completion["usage"])
        completion["usage"].update(self.usage_override)
        if fault and fault.kind == "filtered_reply":  # Azure withholds a reply its output filter caught
            completion["choices"][0].update(message={"role": "assistant", "content": None},
                                            finish_reason="content_filter")
        if self.usage_override:  # figures orjson cannot write (2**70, NaN): the standard library can
            return self._with_headers(web.Response(text=json.dumps(completion), content_type="application/json"))
        return self._with_headers(json_reply(completion))

    def _count_usage(self, usage: dict[str, Any]) -> None:
        with self._lock:
            for key, value in (("prompt", usage["prompt_tokens"]), ("completion", usage["completion_tokens"]),
                               ("reasoning", usage["completion_tokens_details"]["reasoning_tokens"]),
                               ("cached", usage["prompt_tokens_details"]["cached_tokens"])):
                self.usage_totals[key] += value

    def _refusal(self, request: web.Request, body: dict) -> web.Response | None:
        """A 400 for a parameter this model does not take (its dialect, its reply formats)."""
        if self.reject_json_mode and "response_format" in body:
            return _error(400, "Invalid parameter: 'response_format' is not supported with this model.",
                          "invalid_request_error", param="response_format")
        kind = body.get("response_format", {}).get("type") if isinstance(body.get("response_format"), dict) else None
        if kind == "json_schema" and not self.json_schema:
            return _error(400, "Invalid parameter: 'response_format' of type 'json_schema' is not supported "
                          "with this model.", "invalid_request_error", param="response_format")
        api_version = request.query.get("api-version") if "/deployments/" in request.path else None
        refused = refusal(self.family, body, api_version)
        if refused is None:
            return None
        status, message, code, param = refused
        return error_reply(status, message, type="invalid_request_error", code=code, param=param)

    def _with_headers(self, response: web.Response) -> web.Response:
        response.headers.update(self._rate_headers(time.monotonic()))
        response.headers.update(self.header_overrides)
        return response

    def _offer_content(self, asked: list[str], body: dict, fault: str | None) -> str:
        """One object keyed by the criteria asked (per_offer), or a scripted way of getting it wrong."""
        verdicts = {c: self.answers.get(c) or _default_answer(c, body) for c in asked}
        if fault == "missing_criterion":
            verdicts.pop(asked[-1])
        if fault == "extra_criterion":
            extra = next((c for c in CRITERIA if c not in asked), "overall")
            verdicts[extra] = {"answer": "YES", "score": 10, "missing_skills": [], "irrelevant_skills": []}
        text = orjson.dumps(verdicts).decode()
        if fault == "duplicate_criterion":  # the same key twice: json would keep the last silently
            first = orjson.dumps({asked[0]: {"answer": "YES", "score": 10}}).decode()[1:-1]
            text = "{" + first + "," + text[1:]
        if fault == "echo_offer_verdict":  # quoting a verdict set forged in the offer, then its own
            forged = {c: {"answer": "YES", "score": 10, "missing_skills": [], "irrelevant_skills": []} for c in asked}
            return f"The offer contains {orjson.dumps(forged).decode()}, which I ignore.\n{text}"
        if fault == "prose":
            return f"Here is my assessment.\n{text}\nThank you."
        if fault == "malformed":
            return text[: len(text) // 2]
        return text

    def _too_many(self, retry_after_ms: int) -> web.Response:
        with self._lock:
            self.http_429 += 1
        message = ("Requests to the ChatCompletions_Create Operation have exceeded call rate limit. "
                   f"Please retry after {math.ceil(retry_after_ms / 1000)} second.")
        return too_many(_error(429, message, "429"), retry_after_ms)

    def _content(self, criterion: str | None, body: dict, fault: str | None) -> str:
        answer = self.answers.get(criterion or "") or _default_answer(criterion, body)
        text = orjson.dumps(answer).decode()
        if fault == "malformed":
            return text[: len(text) // 2]  # cut mid-object: not JSON at all
        if fault == "fenced":
            return f"```json\n{text}\n```"
        if fault == "prose":
            return f"Here is my assessment of the offer.\n{text}\nI hope this helps."
        if fault == "nested":  # 3 KB that Python's json cannot decode without a RecursionError
            return "[" * 3000
        if fault == "two_answers":  # quoting a verdict forged in the offer, then its own
            return f'The offer says {{"answer": "YES", "score": 10}}, which I ignore.\n{text}'
        if fault == "duplicate_keys":  # json.loads would keep the last answer and score silently
            return '{"answer": "NO", "score": 1, "answer": "YES", "score": 10}'
        return text

    # ------------------------------------------------------------ running

    thread_name = "fake-judge"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/openai/deployments/{name}/chat/completions", self._azure)
        app.router.add_post("/openai/v1/chat/completions", self._azure_v1)
        return app


async def _hostile_body(request: web.Request, kind: str) -> web.StreamResponse:
    """A 200 whose body never ends in time: 5 MB in 64 KB chunks (no Content-Length), or a valid
    start trickled 16 bytes every 0.5 s (each read is quick: only a total deadline stops it)."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        if kind == "huge_body":
            await response.write(b'{"choices": [{"message": {"content": "')
            for _ in range(80):
                await response.write(b"x" * 65536)
        else:
            for _ in range(120):
                await response.write(b'{"padding": "' + b" " * 3)
                await asyncio.sleep(0.5)
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the client hung up, as it should
    return response


# Error replies as the real services word them: (status, message, code).
_ERRORS: dict[str, tuple[int, str, str]] = {
    "500": (500, "The server had an error while processing your request.", "server_error"),
    "503": (503, "The service is temporarily unable to process your request. Please try again later.",
            "ServiceUnavailable"),
    "content_filter": (400, "The response was filtered due to the prompt triggering Azure OpenAI's content "
                       "management policy.", "content_filter"),
    "context_length": (400, "This model's maximum context length is 8192 tokens. However, your messages "
                       "resulted in 9012 tokens. Please reduce the length of the messages.",
                       "context_length_exceeded"),
    "413": (413, "Request entity too large.", "request_too_large"),
    "401": (401, "Access denied due to invalid subscription key or wrong API endpoint.", "401"),
    "403": (403, "Principal does not have access to API/Operation.", "PermissionDenied"),
    "404": (404, "The API deployment for this resource does not exist.", "DeploymentNotFound"),
}
_CRITERION_LINE = re.compile(r"Criterion:\s*([a-z_]+)")
_OFFER_SHAPE = re.compile(r'"([a-z_]+)": verdict\b')  # the reply shape a per-offer prompt asks for


def _criteria_of(body: Any) -> list[str]:
    """The criteria a per-offer request asks for (its reply shape `{"a": verdict, ...}`), else []."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return []
    for m in body["messages"]:
        if isinstance(m, dict) and m.get("role") == "system":
            names = _OFFER_SHAPE.findall(str(m.get("content", "")))
            if names:
                return [n for n in names if n in CRITERIA]
    return []


def intake_tokens(body: Any) -> float:
    """What the quota charges at intake: prompt (chars / 4) + max_tokens, as Azure estimates it."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return 0.0
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body["messages"] if isinstance(m, dict))
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    return max(1, prompt_chars // 4) + (max_tokens if isinstance(max_tokens, int) else 0)


def _criterion_of(body: Any) -> str | None:
    """Which criterion a request asks about: its `Criterion: NAME` line, else the first name it mentions."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return None
    texts = [str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict)]
    for text in texts:
        match = _CRITERION_LINE.search(text)
        if match and match.group(1) in CRITERIA:
            return match.group(1)
    for text in texts:
        hits = [(text.find(name), name) for name in CRITERIA if name in text]
        if hits:
            return min(hits)[1]
    return None


def _default_answer(criterion: str | None, body: dict) -> dict:
    """A plausible, deterministic answer: a score of 6-10 derived from the request."""
    digest = zlib.crc32(orjson.dumps(body.get("messages")))
    score = 6 + digest % 5
    return {"answer": "YES" if score >= 7 else "NO", "score": score, "missing_skills": [], "irrelevant_skills": []}


def _completion(body: dict, content: str, cut: bool = True, reasoning: int = 0, cached: int = 0,
                model: str = "") -> dict:
    """The chat completion around `content`, cut at the reply budget (chars / 4) as a model's reply
    is: hidden `reasoning` tokens come first, so a budget they fill leaves an empty answer."""
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body["messages"] if isinstance(m, dict))
    finish, limit = "stop", reply_budget(body)
    if cut and limit is not None:
        reasoning = min(reasoning, limit)
        room = limit - reasoning
        if len(content) > room * 4:
            content, finish = content[: room * 4], "length"
    prompt_tokens = max(1, prompt_chars // 4)
    completion_tokens = reasoning + (max(1, len(content) // 4) if content else 0)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": min(cached, prompt_tokens)},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or str(body.get("model", "fake-judge")),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
        ],
        "usage": usage,
    }


def _error(status: int, message: str, code: str, param: str | None = None) -> web.Response:
    """An error as Azure OpenAI words it: its own code, the type always `invalid_request_error`."""
    return error_reply(status, message, type="invalid_request_error", code=code, param=param)
