"""Generation on OpenAI-compatible completion servers (vLLM), with LoRA adapters hot-loaded.

One `SampleRequest` (a context and its attempts) is one `POST {url}/v1/completions`. The prompt
goes as OUR token ids (the chat template rendered by our tokenizer), so the server re-tokenises
nothing; `n` is the number of attempts; the reply carries every sampled token as `token_id:N`
(`return_tokens_as_token_ids`) with its log-prob, so the learner gets exact ids and the
behaviour log-probs of the engine that sampled them.

Requests take turns over the servers in rotation (round robin), at most `max_concurrency` at a
time. Transient failures (429, 408/409, 5xx, timeouts, connection errors, malformed or oversized
replies) are retried with the judge's rules: exponential backoff with full jitter, at least what
`retry-after-ms` / `Retry-After` asks, each retry on the next server in turn.

Outages never end the run and never lose a trajectory (a breaker like the judge's): a server
leaves the rotation after `max_retries + 1` failed attempts in a row, at once when it refuses us
(an adapter it will not load, a 401 mid-run), and its share goes to the others
(`generator_server_down`). With none left, generation pauses (`generator_paused`, with the
reason and the server): requests wait. Every `backoff_max_s` a probe loads the current adapter on
each server out of rotation and asks it for one token; one that answers rejoins
(`generator_server_up`, or `generator_resumed` with `paused_s`), and waiting requests are sent
again. What no waiting can fix is a `RemoteGeneratorError` that names the server: at start-up
(`check()`: no answer, a 401, a model the servers do not serve) and a request a server rejects
as such (HTTP 400: a prompt too long for the server, say).

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
from dataclasses import dataclass, field, replace
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
    """A generator server refused us (at start-up, or a request as such); names the server."""

    kind = "generator"

    def __init__(self, text: str, status: int = 0) -> None:
        super().__init__(text)
        self.status = status  # the HTTP status of the refusal, 0 when there was none


class Transient(Exception):
    """A failure worth retrying (on the next server): a 429/5xx, a timeout, a bad reply."""

    def __init__(self, text: str, retry_after: float | None = None, server: str = "") -> None:
        super().__init__(text)
        self.retry_after = retry_after  # seconds the server asked us to wait, if it did
        self.server = server  # the URL that failed


class NoServer(Exception):
    """Every server is out of rotation: the request waits for the probe, then starts again."""


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
    paused: bool = False  # no server in rotation: requests wait for the probe
    pauses: int = 0
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


async def prune_old_adapters(root: str | Path, keep: int = 3) -> list[Path]:
    """`prune_adapter_folders` in a worker thread: deleting folders is blocking file I/O."""
    return await asyncio.to_thread(prune_adapter_folders, root, keep)


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


def parse_completions(reply: Any, n: int, max_tokens: int, embedding_rows: int) -> list[Completion]:
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
        out[index] = _parse_choice(choice, index, max_tokens, embedding_rows)
    return out  # type: ignore[return-value]


def _parse_choice(choice: dict, index: int, max_tokens: int, embedding_rows: int) -> Completion:
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
    ids = tuple(_token_id(t, index, embedding_rows) for t in tokens)
    logprobs = tuple(_logprob(v, index) for v in values)
    return Completion(ids, logprobs, finish)


def _token_id(token: Any, index: int, embedding_rows: int) -> int:
    match = _TOKEN_ID.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise ReplyError(
            f"choice {index}: token {str(token)[:40]!r} is not 'token_id:N' "
            "(the server must support return_tokens_as_token_ids, as vLLM does)"
        )
    value = int(match.group(1))
    if value >= embedding_rows:
        raise ReplyError(f"choice {index}: token id {value} is past the model's {embedding_rows} embedding rows")
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


# ---------------------------------------------------------------- which servers take requests


class Rotation:
    """The servers that take requests, in turn (round robin), and those out of rotation (pure).

    A server leaves after `max_failures` failed attempts in a row, or when the generator takes
    it out (it refused us); only `bring_back` (the probe) returns it.
    """

    def __init__(self, urls: Sequence[str], max_failures: int) -> None:
        self.urls = tuple(urls)
        self.max_failures = max_failures
        self.out: dict[str, str] = {}  # url -> why it left
        self._turn = itertools.cycle(self.urls)
        self._failures: Counter[str] = Counter()  # failed attempts in a row

    @property
    def serving(self) -> int:
        return len(self.urls) - len(self.out)

    def next(self) -> str | None:
        """The next server in rotation; None when every one is out."""
        for _ in self.urls:
            url = next(self._turn)
            if url not in self.out:
                return url
        return None

    def succeeded(self, url: str) -> None:
        self._failures.pop(url, None)

    def failed(self, url: str) -> bool:
        """Count a failed attempt on `url`; True when that makes `max_failures` in a row."""
        self._failures[url] += 1
        return self._failures[url] >= self.max_failures and url not in self.out

    def take_out(self, url: str, reason: str) -> bool:
        """True when `url` was in rotation until now (the reason is updated either way)."""
        was_serving = url not in self.out
        self.out[url] = reason
        return was_serving

    def bring_back(self, url: str) -> None:
        self.out.pop(url, None)
        self._failures.pop(url, None)


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
        embedding_rows: int | None = None,
    ) -> None:
        self.tokenizer, self.gen, self.opts = tokenizer, gen, options
        self.embedding_rows = embedding_rows or len(tokenizer)  # tests without a model: the tokenizer
        self.stats = RemoteStats()
        self.current = Adapter(options.model, 0)
        self._key = api_key
        # The key, and any password in a server URL (http://user:password@host), never reach a log.
        logging_.refresh_secrets([api_key, *(urlsplit(u).password or "" for u in options.urls)])
        self.rotation = Rotation(options.urls, max_failures=options.max_retries + 1)
        self._serving = asyncio.Event()  # set while a server is in rotation: requests flow
        self._serving.set()
        self._paused_at = 0.0
        self._out_since: dict[str, float] = {}
        self._probe: asyncio.Task | None = None
        self._slots = asyncio.Semaphore(options.max_concurrency)
        self._weights = asyncio.Lock()  # one load at a time; requests never wait on it
        self._in_flight: Counter[str] = Counter()  # adapter name -> requests naming it (> 0)
        self._stale: dict[str, Adapter] = {}  # replaced adapters, unloaded once idle
        self._session: aiohttp.ClientSession | None = None
        self._prompts: dict[Context, tuple[int, ...]] = {}

    @classmethod
    def for_policy(cls, policy: Any, gen: GenerationConfig, options: RemoteOptions, *,
                   api_key: str = "") -> RemoteGenerator:
        """For the trainer's `Policy`: its tokenizer, and ids bounded by its embedding rows.

        Not by `len(tokenizer)`: a tokenizer may hold ids the model has no row for (added tokens
        without a resize), and one of those in a completion would crash the learner's forward pass.
        """
        rows = int(policy.model.get_input_embeddings().num_embeddings)
        return cls(policy.tokenizer, gen, options, api_key=api_key, embedding_rows=rows)

    # ------------------------------------------------------------ Generator protocol

    @property
    def paused(self) -> bool:
        return not self._serving.is_set()

    @property
    def adapters_in_flight(self) -> dict[str, int]:
        """Adapter name -> requests in flight naming it (only names with some)."""
        return dict(self._in_flight)

    async def generate(self, requests: Sequence[SampleRequest]) -> list[Trajectory]:
        """Every request's attempts, in request order; waits out outages (see the module's doc).

        Raises `RemoteGeneratorError` only for a request a server rejects as such (HTTP 400).
        """
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._sample(r)) for r in requests]
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        return [t for task in tasks for t in task.result()]

    async def load_weights(self, policy_version: int, adapter_dir: str | Path | None) -> None:
        """Load the adapter in `adapter_dir` on every server; later requests name it.

        A server that still refuses after its retries leaves the rotation until the probe has
        loaded the adapter there; with none left generation pauses. Requests never name an
        older adapter than the trainer's (the staleness bound holds). Raises only for a bug or
        a folder outside `generator.adapter_root` (ConfigError).
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
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, (Transient, RemoteGeneratorError)):
                    raise result  # a bug or a cancellation: not ours to reword
            self._switch(adapter)
            refused = [(url, r) for url, r in zip(self.opts.urls, results) if isinstance(r, BaseException)]
            for url, error in refused:
                self._take_out(url, f"adapter {adapter.name} from {adapter.path} not loaded: {_text(error)}")
            if len(refused) < len(self.opts.urls):
                self.stats.loads += 1
                log().info("adapter_loaded", adapter=adapter.name, version=policy_version, path=path,
                           servers=len(self.opts.urls) - len(refused), seconds=round(time.monotonic() - started, 3))
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
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None
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
        while True:
            await self._serving.wait()  # paused: until the probe brings a server back
            try:
                return await self._retrying(counter="retries")(self._attempt, request, prompt)
            except NoServer:
                continue  # the last server left while this request waited for a slot
            except Transient as e:
                # Never dropped, never a zero: said, then sent again with a fresh set of retries.
                log().warning("generator_request_failed", split=request.split, step=request.step,
                              group=request.group, attempts=self.opts.max_retries + 1,
                              server=host_of(e.server), reason=self._scrub(str(e)))

    async def _attempt(self, request: SampleRequest, prompt: tuple[int, ...]) -> list[Trajectory]:
        limit = reply_limit(request.attempts, self.gen.max_new_tokens)
        async with self._slots:
            # The adapter is chosen once a slot is ours and counted in flight at once (no await
            # between): a load that completes meanwhile cannot unload it under this request.
            url, adapter = self.rotation.next(), self.current
            if url is None:
                raise NoServer()
            body = completion_request(prompt, request.attempts, adapter.name, self.gen)
            self._in_flight[adapter.name] += 1
            try:
                self.stats.requests += 1
                self.stats.per_server[url] += 1
                started = time.monotonic()
                status, raw, headers = await self._http("POST", url, "/v1/completions", body, limit)
                self.stats.latencies_ms.append((time.monotonic() - started) * 1000)
            except Transient as e:
                self._attempt_failed(url, e)
                raise
            finally:
                self._in_flight[adapter.name] -= 1
                if self._in_flight[adapter.name] <= 0:
                    del self._in_flight[adapter.name]
        try:
            completions = await self._completions(url, adapter, request, status, raw, headers)
        except Transient as e:
            self._attempt_failed(url, e)
            raise
        except RemoteGeneratorError as e:
            if e.status == 400:
                raise  # the request itself is refused (e.g. too long for the server): waiting cannot fix it
            self._take_out(url, _text(e))  # a 401 or an unknown model mid-run: that server's state
            raise Transient(_text(e), server=url) from None
        self.rotation.succeeded(url)
        self.stats.completions += len(completions)
        self.stats.tokens += sum(len(c.token_ids) for c in completions)
        return [self._trajectory(request, prompt, i, c, adapter.version) for i, c in enumerate(completions)]

    async def _completions(self, url: str, adapter: Adapter, request: SampleRequest, status: int,
                           raw: bytes, headers: Mapping[str, str]) -> list[Completion]:
        if status == 404 and adapter.path:
            # The server lost the adapter (a restart): load it there again if it is still the
            # current one; the retry names whatever is current by then.
            if adapter == self.current:
                await self._reload(url, adapter)
            raise Transient(f"HTTP 404 from {host_of(url)}: adapter {adapter.name} was not loaded there",
                            server=url)
        if status >= 400:
            self._raise_for_status(url, "/v1/completions", status, raw, headers)
        try:
            return parse_completions(orjson.loads(raw), request.attempts, self.gen.max_new_tokens,
                                     self.embedding_rows)
        except (orjson.JSONDecodeError, ReplyError) as e:
            raise Transient(f"malformed reply from {host_of(url)}: {e}", server=url) from None

    def _attempt_failed(self, url: str, error: Transient) -> None:
        if self.rotation.failed(url):
            self._take_out(url, f"{self.rotation.max_failures} attempts in a row failed, the last: {error}")

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
                            "see generator.adapter_root / server_adapter_root)", server=url)
        self._raise_for_status(url, "/v1/load_lora_adapter", status, raw, headers)

    async def _reload(self, url: str, adapter: Adapter) -> None:
        """One try at loading `adapter` again on a server that lost it; the request's retry follows."""
        try:
            await self._load_on(url, adapter)
        except (Transient, RemoteGeneratorError) as e:
            raise Transient(f"{host_of(url)} lost adapter {adapter.name} and did not take it back: {e}",
                            server=url) from None
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

    # ------------------------------------------------------------ servers out of rotation, the probe

    def _take_out(self, url: str, reason: str) -> None:
        """`url` takes no requests until the probe brings it back; with none left, generation pauses."""
        reason = self._scrub(reason)
        if not self.rotation.take_out(url, reason):
            return
        self._out_since[url] = time.monotonic()
        if self.rotation.serving == 0:
            self._serving.clear()
            self._paused_at = time.monotonic()
            self.stats.paused, self.stats.pauses = True, self.stats.pauses + 1
            log().warning("generator_paused", reason=reason, server=host_of(url),
                          probe_interval_s=self.opts.backoff_max_s)
        else:
            log().warning("generator_server_down", server=host_of(url), reason=reason,
                          serving=self.rotation.serving)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_until_back(), name="generator-probe")

    def _bring_back(self, url: str) -> None:
        self.rotation.bring_back(url)
        down_s = time.monotonic() - self._out_since.pop(url, time.monotonic())
        if self.paused:
            self._serving.set()
            self.stats.paused = False
            log().info("generator_resumed", paused_s=round(time.monotonic() - self._paused_at, 3),
                       server=host_of(url))
        else:
            log().info("generator_server_up", server=host_of(url), down_s=round(down_s, 3))

    async def _probe_until_back(self) -> None:
        """Every `backoff_max_s`, each server out of rotation is probed; one that answers rejoins."""
        while self.rotation.out:
            await asyncio.sleep(self.opts.backoff_max_s)
            for url in list(self.rotation.out):
                try:
                    await self._probe_server(url)
                except Exception as e:  # whatever it is (a restart, a rotated key), keep probing and say why
                    log().warning("generator_probe_failed", server=host_of(url), reason=self._scrub(_text(e)))
                else:
                    self._bring_back(url)

    async def _probe_server(self, url: str) -> None:
        """The current adapter loaded there (again), then one completion of one token naming it."""
        async with self._weights:
            adapter = self.current
            if adapter.path:
                await self._load_on(url, adapter)
        body = completion_request(self._probe_prompt(), 1, adapter.name, replace(self.gen, max_new_tokens=1))
        status, raw, headers = await self._http("POST", url, "/v1/completions", body, reply_limit(1, 1),
                                                timeout_s=min(self.opts.timeout_s, 30.0))
        if status >= 400:
            self._raise_for_status(url, "/v1/completions", status, raw, headers)
        parse_completions(orjson.loads(raw), 1, 1, self.embedding_rows)
        if adapter != self.current:
            raise Transient(f"adapter {self.current.name} was published during the probe: probing again")

    def _probe_prompt(self) -> list[int]:
        ids = [self.tokenizer.bos_token_id, self.tokenizer.eos_token_id, 0]
        return [next(i for i in ids if i is not None)]

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
            raise Transient(f"oversized reply from {host_of(url)}: {e}", server=url) from None
        except TimeoutError:
            raise Transient(f"no answer from {host_of(url)} within {timeout.total:g} s", server=url) from None
        except aiohttp.ClientError as e:
            raise Transient(f"cannot reach {host_of(url)}: {self._scrub(str(e) or type(e).__name__)}",
                            server=url) from None

    def _raise_for_status(self, url: str, path: str, status: int, raw: bytes, headers: Mapping[str, str]) -> None:
        if status == 429:
            self.stats.http_429 += 1
        if status in RETRYABLE_STATUS or status >= 500:
            raise Transient(f"HTTP {status} from {host_of(url)}: {self._scrub(server_message(raw))}",
                            retry_after=retry_after_s(headers), server=url)
        raise self._refused(url, path, status, raw)

    def _refused(self, url: str, path: str, status: int, raw: bytes) -> RemoteGeneratorError:
        where = f"{host_of(url)}{path}"
        message = self._scrub(server_message(raw))
        if status == 401:
            return RemoteGeneratorError(f"authentication failed at {where} (HTTP 401): check VLLM_API_KEY", 401)
        if status == 404 and path == "/v1/completions":
            return RemoteGeneratorError(f"model '{self.opts.model}' not found at {where} (HTTP 404): "
                                        f"{message}; check generator.model", 404)
        return RemoteGeneratorError(f"request rejected by {where} (HTTP {status}): {message}", status)

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


def _text(error: BaseException) -> str:
    """An error's message without the "generator: " kind prefix (it goes inside another message)."""
    return str(error.args[0]) if isinstance(error, RemoteGeneratorError) and error.args else str(error)


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
