"""`RemoteGenerator`: the `Generator` protocol over OpenAI-compatible completion servers (vLLM).

One `SampleRequest` (a context and its attempts) is one `POST {url}/v1/completions` (reply.py)
on the next server in rotation (rotation.py), at most `max_concurrency` at a time. A transient
failure is retried with the shared policy (http.py), each retry on the next server in turn.

Invariant: nothing is dropped and nothing becomes a zero. A request whose retries are spent
says so (`generator_request_failed`) and starts again; while no server is in rotation it
waits. Only a request a server rejects as such (HTTP 400: a prompt too long for the server,
say) or a bug ends `generate`, and `check()` stops a run at start-up (no answer, a 401, a
model the servers do not serve) with a `RemoteGeneratorError` that names the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from ..aio import leaf_errors
from ..config import GenerationConfig
from ..flow.records import Context, Trajectory
from ..generation.generator import SampleRequest
from ..ops.log import host_of
from ..policy.prompts import prompt_ids
from .adapters import Adapter, Adapters
from .http import ERROR_BYTES, RemoteGeneratorError, Servers, Transient, message_of
from .options import RemoteOptions, RemoteStats, log
from .reply import Completion, MalformedReply, completion_request, model_ids, parse_completions, reply_limit
from .rotation import NoServer, Rotation, RotationBreaker

PROBE_TIMEOUT_S = 30.0  # the start-up check and the probe ask for little: they need not wait long


class RemoteGenerator:
    """Samples on the servers; `load_weights` publishes the trainer's adapter to them."""

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
        self.servers = Servers(options, self.stats, api_key)
        self.adapters = Adapters(self.servers, options, self.stats)
        self.rotation = Rotation(options.urls, max_failures=options.max_retries + 1)
        self.breaker = RotationBreaker(self.rotation, self._probe, options.backoff_max_s, self.stats,
                                       self.servers.scrub)
        self._slots = asyncio.Semaphore(options.max_concurrency)
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
        return self.breaker.paused

    @property
    def current(self) -> Adapter:
        return self.adapters.current

    @property
    def adapters_in_flight(self) -> dict[str, int]:
        """Adapter name -> requests in flight naming it (only names with some)."""
        return dict(self.adapters.in_flight)

    async def generate(self, requests: Sequence[SampleRequest]) -> list[Trajectory]:
        """Every request's attempts, in request order; waits out outages (see the module's doc).

        Raises `RemoteGeneratorError` only for a request a server rejects as such (HTTP 400).
        """
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._sample(r)) for r in requests]
        except BaseExceptionGroup as group:
            raise _worst(leaf_errors(group)) from None
        return [t for task in tasks for t in task.result()]

    async def stream(self, requests: Sequence[SampleRequest]) -> AsyncGenerator[Trajectory, None]:
        """Every request's attempts, a request's together as soon as its reply is in (in no set
        order). Each request is a task of its own: sampling never waits for the consumer. Raises
        as `generate` does, once the other requests are cancelled."""
        tasks = [asyncio.create_task(self._sample(r)) for r in requests]
        try:
            for reply in asyncio.as_completed(tasks):
                try:
                    trajectories = await reply
                except Exception:
                    results = await _cancel(tasks)
                    raise _worst([r for r in results if isinstance(r, Exception)]) from None
                for t in trajectories:
                    yield t
        finally:
            await _cancel(tasks)  # the consumer stopped early, or was cancelled

    async def load_weights(self, policy_version: int, adapter_dir: str | Path | None) -> None:
        """Load the adapter in `adapter_dir` on every server; later requests name it.

        A server that still refuses after its retries leaves the rotation until the probe has
        loaded the adapter there; with none left generation pauses. Raises only for a bug or
        a folder outside `generator.adapter_root` (ConfigError).
        """
        await self.adapters.publish(policy_version, adapter_dir, self.breaker.take_out)

    # ------------------------------------------------------------ start-up check and shutdown

    async def check(self) -> None:
        """Each server answers `/v1/models` and serves the base model; one clear error otherwise."""
        for url in self.opts.urls:
            try:
                status, body, _ = await self.servers.call("GET", url, "/v1/models", None, ERROR_BYTES,
                                                          timeout_s=min(self.opts.timeout_s, PROBE_TIMEOUT_S))
            except Transient as e:
                raise RemoteGeneratorError(f"generator server {host_of(url)} does not answer: {e}") from None
            if status >= 400:
                raise self.servers.refused(url, "/v1/models", status, body)
            served = model_ids(body)
            if self.opts.model not in served:
                raise RemoteGeneratorError(
                    f"generator server {host_of(url)} does not serve model '{self.opts.model}' "
                    f"(it serves {sorted(served)[:5]}): set generator.model to its --served-model-name"
                )

    async def aclose(self) -> None:
        await self.breaker.aclose()
        await self.servers.aclose()

    async def __aenter__(self) -> RemoteGenerator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ sampling

    async def _sample(self, request: SampleRequest) -> list[Trajectory]:
        prompt = self._prompt(request.context)
        while True:
            await self.breaker.wait_serving()  # paused: until the probe brings a server back
            try:
                return await self.servers.retrying(counter="retries")(self._attempt, request, prompt)
            except NoServer:
                continue  # the last server left while this request waited for a slot
            except Transient as e:
                # Never dropped, never a zero: said, then sent again with a fresh set of retries.
                log().warning("generator_request_failed", split=request.split, step=request.step,
                              group=request.group, attempts=self.opts.max_retries + 1,
                              server=host_of(e.server), reason=self.servers.scrub(str(e)))

    async def _attempt(self, request: SampleRequest, prompt: tuple[int, ...]) -> list[Trajectory]:
        limit = reply_limit(request.attempts, self.gen.max_new_tokens)
        async with self._slots:
            url = self.rotation.next()
            if url is None:
                raise NoServer()
            with self.adapters.in_use() as adapter:
                body = completion_request(prompt, request.attempts, adapter.name, self.gen)
                try:
                    self.stats.requests += 1
                    self.stats.per_server[url] += 1
                    started = time.monotonic()
                    status, raw, headers = await self.servers.call("POST", url, "/v1/completions", body, limit)
                    self.stats.latencies_ms.append((time.monotonic() - started) * 1000)
                except Transient as e:
                    self.breaker.failed(url, e)
                    raise
        try:
            completions = await self._completions(url, adapter, request, status, raw, headers)
        except Transient as e:
            self.breaker.failed(url, e)
            raise
        except RemoteGeneratorError as e:
            if e.status == 400:
                raise  # the request itself is refused (e.g. too long for the server): waiting cannot fix it
            self.breaker.take_out(url, message_of(e))  # a 401 or an unknown model mid-run: that server's state
            raise Transient(message_of(e), server=url) from None
        self.breaker.succeeded(url)
        self.stats.completions += len(completions)
        self.stats.tokens += sum(len(c.token_ids) for c in completions)
        return [self._trajectory(request, prompt, i, c, adapter.version) for i, c in enumerate(completions)]

    async def _completions(self, url: str, adapter: Adapter, request: SampleRequest, status: int,
                           raw: bytes, headers: Mapping[str, str]) -> list[Completion]:
        if status == 404 and adapter.path:
            # The server lost the adapter (a restart): load it there again.
            await self.adapters.reload_if_current(url, adapter)
            raise Transient(f"HTTP 404 from {host_of(url)}: adapter {adapter.name} was not loaded there",
                            server=url)
        if status >= 400:
            self.servers.raise_for_status(url, "/v1/completions", status, raw, headers)
        try:
            return parse_completions(orjson.loads(raw), request.attempts, self.gen.max_new_tokens,
                                     self.embedding_rows)
        except (orjson.JSONDecodeError, MalformedReply) as e:
            raise Transient(f"malformed reply from {host_of(url)}: {e}", server=url) from None

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

    # ------------------------------------------------------------ the probe (rotation.py runs it)

    async def _probe(self, url: str) -> None:
        """The current adapter loaded on `url` (again), then one completion of one token naming it."""
        adapter = await self.adapters.restore_on(url)
        body = completion_request(self._probe_prompt(), 1, adapter.name, replace(self.gen, max_new_tokens=1))
        status, raw, headers = await self.servers.call("POST", url, "/v1/completions", body, reply_limit(1, 1),
                                                       timeout_s=min(self.opts.timeout_s, PROBE_TIMEOUT_S))
        if status >= 400:
            self.servers.raise_for_status(url, "/v1/completions", status, raw, headers)
        parse_completions(orjson.loads(raw), 1, 1, self.embedding_rows)
        if adapter != self.current:
            raise Transient(f"adapter {self.current.name} was published during the probe: probing again")

    def _probe_prompt(self) -> list[int]:
        ids = [self.tokenizer.bos_token_id, self.tokenizer.eos_token_id, 0]
        return [next(i for i in ids if i is not None)]


async def _cancel(tasks: list[asyncio.Task]) -> list[Any]:
    """Cancel `tasks` and wait for them; their results, errors or cancellations."""
    for task in tasks:
        task.cancel()
    return await asyncio.gather(*tasks, return_exceptions=True)


def _worst(errors: list[BaseException]) -> BaseException:
    """The error a failed batch raises: a bug says more than a generator error, so it goes first."""
    return next((e for e in errors if not isinstance(e, RemoteGeneratorError)), errors[0])
