"""Generation on OpenAI-compatible completion servers (vLLM), with LoRA adapters hot-loaded.

One `SampleRequest` (a context and its attempts) is one `POST {url}/v1/completions`. The prompt
goes as OUR token ids (the chat template rendered by our tokenizer), so the server re-tokenises
nothing; `n` is the number of attempts; the reply carries every sampled token as `token_id:N`
(`return_tokens_as_token_ids`) with its log-prob, so the learner gets exact ids and the
behaviour log-probs of the engine that sampled them.

Requests take turns over the servers (round robin), at most `max_concurrency` at a time.
Transient failures (429, 408/409, 5xx, timeouts, connection errors, malformed or oversized
replies) are retried with the judge's rules: exponential backoff with full jitter, at least what
`retry-after-ms` / `Retry-After` asks, each retry on the next server in turn. Anything else
(a 400, a 401, an unknown model) is a `RemoteGeneratorError` that names the server.

Weights: `load_weights(version, folder)` loads the adapter as `policy-v{version}` on every server
(`/v1/load_lora_adapter`); requests sent after that name it, and each trajectory records the
version of the adapter its request named. Before any load, requests name the base model:
version 0, since a fresh LoRA adapter is the identity (B = 0). An adapter that no request in
flight names any more is unloaded. A server that lost our adapter (restarted) answers 404: the
adapter is loaded there again and the request retried.

What the servers must be started with (README, "scaling out"): `--enable-lora`,
`--max-lora-rank` >= lora.r, `--max-loras 2` (current and previous adapter in one batch),
`--logprobs-mode processed_logprobs` (log-probs after temperature, as the trainer computes them;
vLLM's default is the raw model's), and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`.

HTTP is aiohttp: already a runtime dependency (the fake servers use it), and it lets us read a
reply in chunks and stop past a size bound before parsing it (replies hold n x max_tokens
log-probs). openai's `httpx2` is a transitive dependency whose API we would not control.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from . import log as logging_
from .config import GenerationConfig
from .errors import ConfigError, ModelError
from .generator import STOP_TEXT, SampleRequest
from .judge.client import RETRY_AFTER_CAP_S, RETRYABLE_STATUS, host_of, retry_after_s
from .prompts import prompt_ids
from .records import Context, Trajectory

ADAPTER_PREFIX = "policy-v"
LOGPROB_SLACK = 1e-3  # a sampled token's log-prob above 0 by more than rounding is not a log-prob
REPLY_OVERHEAD_BYTES = 64 * 1024
REPLY_BYTES_PER_TOKEN = 512  # token string, log-prob, top log-prob, offset, text: ~100 in practice
ERROR_BYTES = 64 * 1024  # an error body is read up to this, for its message
_TOKEN_ID = re.compile(r"token_id:(\d{1,9})")


def log() -> Any:
    """The generator's logger, looked up per event: logging may be configured after this import."""
    return logging_.get_logger("generator")


class RemoteGeneratorError(ModelError):
    """A generator server refused, or kept failing after its retries; names the server."""

    kind = "generator"


class Transient(Exception):
    """A failure worth retrying (on the next server): a 429/5xx, a timeout, a bad reply."""

    def __init__(self, text: str, retry_after: float | None = None) -> None:
        super().__init__(text)
        self.retry_after = retry_after  # seconds the server asked us to wait, if it did


class ReplyError(ValueError):
    """A reply that is not what was asked for (wrong shape, sizes or values)."""


# ---------------------------------------------------------------- settings and records


@dataclass(frozen=True)
class RemoteOptions:
    """How to reach the servers; the `[generator]` config section maps onto it key for key."""

    urls: tuple[str, ...]
    model: str  # the base model's name on the servers (vLLM's --served-model-name)
    max_concurrency: int = 32  # requests in flight, over all servers (each asks for n samples)
    timeout_s: float = 600.0  # one request: n completions of max_new_tokens
    max_retries: int = 5
    backoff_first_s: float = 0.5  # the first retry waits up to this (full jitter), doubling
    backoff_max_s: float = 30.0
    adapter_root: str = ""  # where adapters are written, as this process sees it
    server_adapter_root: str = ""  # the same folder as the servers see it ("" = same path)
    unload_stale: bool = True

    def __post_init__(self) -> None:
        if not self.urls:
            raise ConfigError("generator.urls is empty: give at least one server (--generator URL)")
        object.__setattr__(self, "urls", tuple(normalise_url(u) for u in self.urls))
        if not self.model:
            raise ConfigError("generator.model is empty: name the base model the servers serve")
        if self.max_concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0:
            raise ConfigError("generator: max_concurrency must be >= 1, max_retries >= 0 and timeout_s > 0")


@dataclass(frozen=True)
class Adapter:
    """What a request names: the base model (version 0, no path) or a loaded LoRA adapter."""

    name: str
    version: int
    path: str = ""  # as the servers see it


@dataclass(frozen=True)
class Completion:
    """One sampled completion, as parsed from a reply."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: str  # stop | length


@dataclass
class RemoteStats:
    """Counters for metrics and benchmarks."""

    requests: int = 0  # HTTP attempts at /v1/completions
    retries: int = 0
    http_429: int = 0
    completions: int = 0
    tokens: int = 0  # completion tokens received
    loads: int = 0  # adapters loaded on every server
    load_retries: int = 0
    reloads: int = 0  # adapters loaded again on a server that had lost them
    per_server: Counter[str] = field(default_factory=Counter)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))


# ---------------------------------------------------------------- pure helpers


def adapter_name(version: int) -> str:
    return f"{ADAPTER_PREFIX}{version}"


def adapter_folder(root: str | Path, version: int) -> Path:
    """Where the trainer saves the adapter of `version` for the servers to load."""
    return Path(root).expanduser() / adapter_name(version)


def prune_adapter_folders(root: str | Path, keep: int = 3) -> list[Path]:
    """Delete all but the newest `keep` `policy-vN` folders under `root`; returns those deleted.

    Three by default: the adapter being loaded, the current one, and the previous one that
    requests in flight may still name (a server that restarts reloads from its folder).
    """
    import shutil

    found = []
    for path in Path(root).expanduser().glob(f"{ADAPTER_PREFIX}*"):
        suffix = path.name.removeprefix(ADAPTER_PREFIX)
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    doomed = [path for _, path in sorted(found)[: max(0, len(found) - keep)]]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def normalise_url(url: str) -> str:
    """`http://host:8000` from `http://host:8000/`, `.../v1` or `host:8000`; rejects other schemes."""
    url = url.strip().rstrip("/")
    if "//" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"generator.urls: {url!r} is not http(s)://HOST[:PORT]")
    return url.removesuffix("/v1")


def server_path(folder: str | Path, local_root: str = "", server_root: str = "") -> str:
    """Where the servers find `folder`: the same path, or moved from `local_root` to `server_root`.

    A shared volume is often mounted at different places (`/data/adapters` here, `/adapters` in
    the vLLM container): the part of `folder` below `local_root` is kept.
    """
    path = Path(folder).expanduser().resolve()
    if not server_root:
        return str(path)
    root = Path(local_root).expanduser().resolve() if local_root else None
    if root is None or not path.is_relative_to(root):
        raise ConfigError(
            f"adapter folder {path} is not under generator.adapter_root {local_root or '(unset)'}: "
            "the servers could not find it"
        )
    return str(Path(server_root) / path.relative_to(root))


def completion_request(prompt: Sequence[int], n: int, model: str, gen: GenerationConfig) -> dict[str, Any]:
    """The body of one `/v1/completions` request (vLLM's extensions included)."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(prompt),  # token ids: nothing is re-tokenised
        "n": n,
        "max_tokens": gen.max_new_tokens,
        "temperature": gen.temperature,
        "top_p": gen.top_p,
        "logprobs": 1,  # the sampled token's log-prob (0 is ignored by some servers)
        "return_tokens_as_token_ids": True,
        "stop": [STOP_TEXT],
        "include_stop_str_in_output": True,
        "skip_special_tokens": False,
        "stream": False,
    }
    if gen.top_k > 0:
        body["top_k"] = gen.top_k
    return body


def reply_limit(n: int, max_tokens: int) -> int:
    """The most bytes a sane reply to an `n` x `max_tokens` request takes."""
    return REPLY_OVERHEAD_BYTES + n * max_tokens * REPLY_BYTES_PER_TOKEN


def parse_completions(reply: Any, n: int, max_tokens: int, vocab_size: int) -> list[Completion]:
    """The `n` completions of a reply, in index order; `ReplyError` on anything inconsistent."""
    if not isinstance(reply, dict):
        raise ReplyError("the reply is not a JSON object")
    choices = reply.get("choices")
    if not isinstance(choices, list) or len(choices) != n:
        got = len(choices) if isinstance(choices, list) else "no"
        raise ReplyError(f"{got} choices for n={n}")
    out: list[Completion | None] = [None] * n
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise ReplyError(f"choice {position} is not an object")
        index = choice.get("index", position)
        if not isinstance(index, int) or not 0 <= index < n or out[index] is not None:
            raise ReplyError(f"choice {position} has a bad or repeated index {index!r}")
        out[index] = _parse_choice(choice, index, max_tokens, vocab_size)
    return out  # type: ignore[return-value]


def _parse_choice(choice: dict, index: int, max_tokens: int, vocab_size: int) -> Completion:
    finish = choice.get("finish_reason")
    if finish not in ("stop", "length"):
        raise ReplyError(f"choice {index} finished with {finish!r}, not 'stop' or 'length'")
    block = choice.get("logprobs")
    if not isinstance(block, dict):
        raise ReplyError(f"choice {index} has no logprobs block (does the server honour 'logprobs'?)")
    tokens, values = block.get("tokens"), block.get("token_logprobs")
    if not isinstance(tokens, list) or not isinstance(values, list) or len(tokens) != len(values):
        raise ReplyError(f"choice {index}: tokens and token_logprobs are missing or differ in length")
    if not 1 <= len(tokens) <= max_tokens:
        raise ReplyError(f"choice {index} has {len(tokens)} tokens, outside 1..max_tokens={max_tokens}")
    ids = tuple(_token_id(t, index, vocab_size) for t in tokens)
    logprobs = tuple(_logprob(v, index) for v in values)
    return Completion(ids, logprobs, finish)


def _token_id(token: Any, index: int, vocab_size: int) -> int:
    match = _TOKEN_ID.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise ReplyError(
            f"choice {index}: token {str(token)[:40]!r} is not 'token_id:N' "
            "(the server must support return_tokens_as_token_ids, as vLLM does)"
        )
    value = int(match.group(1))
    if value >= vocab_size:
        raise ReplyError(f"choice {index}: token id {value} is outside the vocabulary ({vocab_size})")
    return value


def _logprob(value: Any, index: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReplyError(f"choice {index}: log-prob {value!r} is not a number")
    value = float(value)
    if not math.isfinite(value) or value > LOGPROB_SLACK:
        raise ReplyError(f"choice {index}: log-prob {value} is not a finite log-probability")
    return min(value, 0.0)


def retry_wait(backoff: float, asked: float | None) -> float:
    """The wait before a retry: our jittered backoff, but never less than what the server asked."""
    return max(backoff, min(asked or 0.0, RETRY_AFTER_CAP_S))


def server_message(body: bytes) -> str:
    """The message in an error body: OpenAI's `{"error": {"message"}}`, vLLM's `{"message"}`, or text."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:300]
    if isinstance(parsed, dict):
        inner = parsed.get("error", parsed)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"][:300]
        if isinstance(parsed.get("message"), str):
            return parsed["message"][:300]
    return str(parsed)[:300]


# ---------------------------------------------------------------- the generator


class RemoteGenerator:
    """The `Generator` protocol over OpenAI-compatible completion servers (vLLM)."""

    def __init__(
        self,
        tokenizer: Any,
        gen: GenerationConfig,
        options: RemoteOptions,
        *,
        api_key: str = "",
        vocab_size: int | None = None,
    ) -> None:
        self.tokenizer, self.gen, self.opts = tokenizer, gen, options
        self.vocab_size = vocab_size or len(tokenizer)
        self.stats = RemoteStats()
        self.current = Adapter(options.model, 0)
        self._key = api_key
        if api_key:
            logging_.refresh_secrets([api_key])
        self._turn = itertools.cycle(options.urls)
        self._slots = asyncio.Semaphore(options.max_concurrency)
        self._weights = asyncio.Lock()  # one load at a time; requests never wait on it
        self._in_flight: Counter[str] = Counter()  # adapter name -> requests naming it
        self._stale: dict[str, Adapter] = {}  # replaced adapters, unloaded once idle
        self._session: aiohttp.ClientSession | None = None
        self._prompts: dict[Context, tuple[int, ...]] = {}

    @classmethod
    def for_policy(cls, policy: Any, gen: GenerationConfig, options: RemoteOptions, *,
                   api_key: str = "") -> RemoteGenerator:
        """For the trainer's `Policy`: its tokenizer, and ids bounded by its output layer."""
        rows = int(policy.model.get_output_embeddings().weight.shape[0])
        return cls(policy.tokenizer, gen, options, api_key=api_key,
                   vocab_size=max(rows, len(policy.tokenizer)))

    # ------------------------------------------------------------ Generator protocol

    async def generate(self, requests: Sequence[SampleRequest]) -> list[Trajectory]:
        """Every request's attempts, in request order; raises `RemoteGeneratorError` if one fails."""
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._sample(r)) for r in requests]
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        return [t for task in tasks for t in task.result()]

    async def load_weights(self, policy_version: int, adapter_dir: str | Path | None) -> None:
        """Load the adapter in `adapter_dir` on every server; later requests name it.

        Raises `RemoteGeneratorError` when a server still refuses after its retries; requests
        then keep naming the previous adapter (the caller decides whether to go on).
        """
        if adapter_dir is None:
            if policy_version != 0:
                raise RemoteGeneratorError(
                    f"policy version {policy_version} has no adapter folder: a remote generator needs the "
                    "adapter saved where the servers can read it (generator.adapter_root)"
                )
            async with self._weights:
                self._switch(Adapter(self.opts.model, 0))  # the base model is policy version 0
            return
        path = server_path(adapter_dir, self.opts.adapter_root, self.opts.server_adapter_root)
        adapter = Adapter(adapter_name(policy_version), policy_version, path)
        async with self._weights:
            if adapter == self.current:
                return
            started = time.monotonic()
            self._stale.pop(adapter.name, None)
            results = await asyncio.gather(
                *(self._load_retrying(url, adapter) for url in self.opts.urls), return_exceptions=True
            )
            failed = [(url, r) for url, r in zip(self.opts.urls, results) if isinstance(r, BaseException)]
            if failed:
                self._stale[adapter.name] = adapter  # loaded on some servers maybe: unload it later
                raise _load_error(adapter, failed)
            self._switch(adapter)
            self.stats.loads += 1
            log().info("adapter_loaded", adapter=adapter.name, version=policy_version, path=path,
                       servers=len(self.opts.urls), seconds=round(time.monotonic() - started, 3))
            if self.opts.unload_stale:
                await self._unload_idle()

    def _switch(self, adapter: Adapter) -> None:
        """Requests name `adapter` from now on; the adapter it replaces is unloaded once idle."""
        previous, self.current = self.current, adapter
        if previous.path and previous.name != adapter.name:
            self._stale[previous.name] = previous

    # ------------------------------------------------------------ start-up check and shutdown

    async def check(self) -> None:
        """Each server answers `/v1/models` and serves the base model; one clear error otherwise."""
        for url in self.opts.urls:
            try:
                status, body, _ = await self._http("GET", url, "/v1/models", None, ERROR_BYTES,
                                                   timeout_s=min(self.opts.timeout_s, 30.0))
            except Transient as e:
                raise RemoteGeneratorError(f"generator server {host_of(url)} does not answer: {e}") from None
            if status >= 400:
                raise self._refused(url, "/v1/models", status, body)
            served = _model_ids(body)
            if self.opts.model not in served:
                raise RemoteGeneratorError(
                    f"generator server {host_of(url)} does not serve model '{self.opts.model}' "
                    f"(it serves {sorted(served)[:5]}): set generator.model to its --served-model-name"
                )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> RemoteGenerator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ sampling

    async def _sample(self, request: SampleRequest) -> list[Trajectory]:
        prompt = self._prompt(request.context)
        retrying = self._retrying(counter="retries")
        try:
            return await retrying(self._attempt, request, prompt)
        except Transient as e:
            raise RemoteGeneratorError(
                f"generation failed after {self.opts.max_retries + 1} attempts "
                f"({request.split} step {request.step}, group {request.group}): {e}"
            ) from None

    async def _attempt(self, request: SampleRequest, prompt: tuple[int, ...]) -> list[Trajectory]:
        limit = reply_limit(request.attempts, self.gen.max_new_tokens)
        async with self._slots:
            # The adapter is chosen once a slot is ours and counted in flight at once (no await
            # between): a load that completes meanwhile cannot unload it under this request.
            url, adapter = next(self._turn), self.current
            body = completion_request(prompt, request.attempts, adapter.name, self.gen)
            self._in_flight[adapter.name] += 1
            try:
                self.stats.requests += 1
                self.stats.per_server[url] += 1
                started = time.monotonic()
                status, raw, headers = await self._http("POST", url, "/v1/completions", body, limit)
                self.stats.latencies_ms.append((time.monotonic() - started) * 1000)
            finally:
                self._in_flight[adapter.name] -= 1
        if status == 404 and adapter.path:
            # The server lost the adapter (a restart): load it there again if it is still the
            # current one; the retry names whatever is current by then.
            if adapter == self.current:
                await self._reload(url, adapter)
            raise Transient(f"HTTP 404 from {host_of(url)}: adapter {adapter.name} was not loaded there")
        if status >= 400:
            self._raise_for_status(url, "/v1/completions", status, raw, headers)
        try:
            completions = parse_completions(orjson.loads(raw), request.attempts, self.gen.max_new_tokens,
                                            self.vocab_size)
        except (orjson.JSONDecodeError, ReplyError) as e:
            raise Transient(f"malformed reply from {host_of(url)}: {e}") from None
        self.stats.completions += len(completions)
        self.stats.tokens += sum(len(c.token_ids) for c in completions)
        return [self._trajectory(request, prompt, i, c, adapter.version) for i, c in enumerate(completions)]

    def _prompt(self, context: Context) -> tuple[int, ...]:
        if context not in self._prompts:
            self._prompts[context] = tuple(prompt_ids(self.tokenizer, context))
        return self._prompts[context]

    def _trajectory(self, request: SampleRequest, prompt: tuple[int, ...], attempt: int,
                    completion: Completion, version: int) -> Trajectory:
        return Trajectory(
            context=request.context,
            split=request.split,
            step=request.step,
            group=request.group,
            attempt=attempt,
            prompt_ids=prompt,
            completion_ids=completion.token_ids,
            # Decoded from the ids with our tokenizer, as the in-process generator does: the
            # ids are what the learner trains on, so the text must be theirs.
            completion_text=self.tokenizer.decode(
                list(completion.token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
            ),
            logprobs=completion.logprobs,
            truncated=completion.finish_reason == "length",
            policy_version=version,
        )

    # ------------------------------------------------------------ adapters

    async def _load_retrying(self, url: str, adapter: Adapter) -> None:
        retrying = self._retrying(counter="load_retries")
        await retrying(self._load_on, url, adapter)

    async def _load_on(self, url: str, adapter: Adapter) -> None:
        body = {"lora_name": adapter.name, "lora_path": adapter.path}
        status, raw, headers = await self._http("POST", url, "/v1/load_lora_adapter", body, ERROR_BYTES)
        if status < 400:
            return
        message = server_message(raw)
        if status == 400 and "already" in message and "loaded" in message:
            return  # an earlier attempt got through before its answer was lost
        if status == 404:
            # vLLM's "No adapter found": the folder is not (yet) visible on the server's side
            # of a shared volume. Worth a few retries, then the hint says what to fix.
            raise Transient(f"HTTP 404 from {host_of(url)}: {message} (can the server read {adapter.path}? "
                            "see generator.adapter_root / server_adapter_root)")
        self._raise_for_status(url, "/v1/load_lora_adapter", status, raw, headers)

    async def _reload(self, url: str, adapter: Adapter) -> None:
        """One try at loading `adapter` again on a server that lost it; the request's retry follows."""
        try:
            await self._load_on(url, adapter)
        except (Transient, RemoteGeneratorError) as e:
            raise Transient(f"{host_of(url)} lost adapter {adapter.name} and did not take it back: {e}") from None
        self.stats.reloads += 1
        log().warning("adapter_reloaded", adapter=adapter.name, server=host_of(url))

    async def _unload_idle(self) -> None:
        """Unload replaced adapters that no request in flight names (best effort)."""
        for name, adapter in list(self._stale.items()):
            if self._in_flight[name] > 0:
                continue  # still sampling: at the next load
            results = await asyncio.gather(*(self._unload_on(url, adapter) for url in self.opts.urls),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                log().warning("adapter_unload_failed", adapter=name, reason=self._scrub(str(errors[0])))
            else:
                del self._stale[name]

    async def _unload_on(self, url: str, adapter: Adapter) -> None:
        status, raw, _ = await self._http("POST", url, "/v1/unload_lora_adapter",
                                          {"lora_name": adapter.name}, ERROR_BYTES)
        if status >= 400 and status != 404:  # 404: not there, which is what we wanted
            raise RemoteGeneratorError(f"HTTP {status} from {host_of(url)}: {server_message(raw)}")

    # ------------------------------------------------------------ HTTP and retries

    def _retrying(self, counter: str) -> AsyncRetrying:
        """Retries of `Transient` failures, counted in `self.stats.<counter>`."""

        def before_sleep(state: RetryCallState) -> None:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log().debug("generator_retry", attempt=state.attempt_number, wait_s=round(wait, 3),
                        reason=self._scrub(str(exc)))

        return AsyncRetrying(
            stop=stop_after_attempt(self.opts.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(Transient),
            before_sleep=before_sleep,
            reraise=True,
        )

    def _wait(self, state: RetryCallState) -> float:
        backoff = wait_random_exponential(multiplier=self.opts.backoff_first_s, max=self.opts.backoff_max_s)(state)
        exc = state.outcome.exception() if state.outcome else None
        return retry_wait(backoff, exc.retry_after if isinstance(exc, Transient) else None)

    async def _http(self, method: str, url: str, path: str, body: Any, limit: int,
                    timeout_s: float | None = None) -> tuple[int, bytes, Mapping[str, str]]:
        """(status, body, headers); `Transient` for what never got a whole answer."""
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.opts.timeout_s)
        data = orjson.dumps(body) if body is not None else None
        try:
            async with self._client().request(method, url + path, data=data, timeout=timeout) as resp:
                raw = await _read_bounded(resp, limit if resp.status < 400 else ERROR_BYTES)
                return resp.status, raw, resp.headers
        except ReplyError as e:
            raise Transient(f"oversized reply from {host_of(url)}: {e}") from None
        except TimeoutError:
            raise Transient(f"no answer from {host_of(url)} within {timeout.total:g} s") from None
        except aiohttp.ClientError as e:
            raise Transient(f"cannot reach {host_of(url)}: {self._scrub(str(e) or type(e).__name__)}") from None

    def _raise_for_status(self, url: str, path: str, status: int, raw: bytes, headers: Mapping[str, str]) -> None:
        if status == 429:
            self.stats.http_429 += 1
        if status in RETRYABLE_STATUS or status >= 500:
            raise Transient(f"HTTP {status} from {host_of(url)}: {self._scrub(server_message(raw))}",
                            retry_after=retry_after_s(headers))
        raise self._refused(url, path, status, raw)

    def _refused(self, url: str, path: str, status: int, raw: bytes) -> RemoteGeneratorError:
        where = f"{host_of(url)}{path}"
        message = self._scrub(server_message(raw))
        if status == 401:
            return RemoteGeneratorError(f"authentication failed at {where} (HTTP 401): check VLLM_API_KEY")
        if status == 404 and path == "/v1/completions":
            return RemoteGeneratorError(f"model '{self.opts.model}' not found at {where} (HTTP 404): "
                                        f"{message}; check generator.model")
        return RemoteGeneratorError(f"request rejected by {where} (HTTP {status}): {message}")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Content-Type": "application/json"}
            if self._key:
                headers["Authorization"] = f"Bearer {self._key}"
            # Connections for every request in flight plus an adapter load per server.
            connector = aiohttp.TCPConnector(limit=self.opts.max_concurrency + 2 * len(self.opts.urls))
            self._session = aiohttp.ClientSession(headers=headers, connector=connector, raise_for_status=False)
        return self._session

    def _scrub(self, text: str) -> str:
        if self._key:
            text = text.replace(self._key, logging_.REDACTED)
        return logging_.redact(text)


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or `ReplyError` as soon as it is longer than `limit` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        raise ReplyError(f"{resp.content_length} bytes, more than the {limit} expected")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ReplyError(f"more than the {limit} bytes expected")
        chunks.append(chunk)
    return b"".join(chunks)


def _model_ids(body: bytes) -> set[str]:
    try:
        parsed = orjson.loads(body)
        return {str(m["id"]) for m in parsed["data"] if isinstance(m, dict) and "id" in m}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return set()


def _load_error(adapter: Adapter, failed: list[tuple[str, BaseException]]) -> BaseException:
    for _, exc in failed:
        if not isinstance(exc, (Transient, RemoteGeneratorError)):
            return exc  # a bug or a cancellation: not ours to reword
    more = f" ({len(failed)} servers failed; the first)" if len(failed) > 1 else ""
    return RemoteGeneratorError(f"adapter {adapter.name} from {adapter.path} not loaded{more}: {failed[0][1]}")


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to raise for a failed batch: a bug first, else the first generator error."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    for exc in leaves:
        if not isinstance(exc, RemoteGeneratorError):
            return exc
    return leaves[0]
