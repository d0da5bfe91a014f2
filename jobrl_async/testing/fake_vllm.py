"""A local stand-in for a vLLM OpenAI-compatible server, for tests and benchmarks.

    POST /v1/completions          prompt as token ids, n, max_tokens, logprobs, stop, ...
    POST /v1/load_lora_adapter    {"lora_name", "lora_path"}: the folder must hold adapter_config.json
    POST /v1/unload_lora_adapter  {"lora_name"}
    GET  /v1/models               the base model and the loaded adapters

It answers in vLLM's shapes and with vLLM's status codes: 404 for an unknown model or a missing
adapter folder, 400 for an adapter loaded twice, tokens as `token_id:N` when asked. Sampling
is deterministic, seeded from the request: by default canned job offers, or the tiny model
itself (`sampler`: samplers.py), cut as vLLM cuts a continuation.

Faults are scriptable per route (`inject`): 429 with Retry-After, 500, 400, hang, malformed
JSON, too few choices, log-prob lists of the wrong length, an oversized reply. `hold()` keeps
completions waiting until `release()`; `restart()` forgets every adapter, as a restarted server
does; `outage()` answers every route with 503 until `recover()`. Every request is recorded
(never the API key). Runs on 127.0.0.1, port 0, in its own thread and event loop, so a test's
loop and the server's never block each other.

    python -m jobrl_async.testing.fake_vllm [--port 8000] [--model tiny] [--served-model-name NAME]
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from aiohttp import web

from .samplers import Sampler, SamplingCall, canned_sampler, cut, stop_token_ids
from .server import Fault, Faults, Served, error_reply, json_reply, too_many

Route = Literal["completions", "load", "unload", "models"]
FaultKind = Literal["429", "500", "400", "hang", "malformed", "short", "mismatch", "huge"]


@dataclass
class RecordedRequest:
    route: Route
    body: Any
    arrived: float
    status: int = 0
    reply: Any = None  # the JSON answered (completions that succeeded)


@dataclass
class FakeVLLM(Served):
    tokenizer: Any
    model: str = "base-model"
    sampler: Sampler | None = None  # None: canned offers (see `canned_sampler`)
    api_key: str = ""  # "": no authentication, as vLLM without --api-key
    seed: int = 0
    latency_ms: float = 0.0
    requests: list[RecordedRequest] = field(default_factory=list)
    loads: list[tuple[str, str]] = field(default_factory=list)  # (name, path) of each successful load
    unloads: list[str] = field(default_factory=list)
    adapters: dict[str, str] = field(default_factory=dict)  # name -> path, as loaded now
    url: str = ""

    def __post_init__(self) -> None:
        # A copy: a fast tokenizer used from two threads at once can fail ("Already borrowed").
        self.tokenizer = copy.deepcopy(self.tokenizer)
        self._faults = Faults()
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self._down = threading.Event()  # set during an outage
        self._sampler: Sampler = self.sampler or canned_sampler(self.tokenizer)
        self._stop_ids = stop_token_ids(self.tokenizer)

    # ------------------------------------------------------------ scripting

    def inject(self, kind: FaultKind, times: int = 1, route: Route = "completions", *,
               retry_after_ms: int = 50, hang_s: float = 5.0) -> None:
        """The next `times` requests on `route` misbehave as `kind` (faults queue up in order).

        `retry_after_ms`: what a 429 asks; `hang_s`: how long a hang lasts (past the client's timeout).
        """
        self._faults.add(Fault(kind, times, route, retry_after_ms, hang_s))

    def hold(self) -> None:
        """Completions wait (after being recorded) until `release()`."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def outage(self) -> None:
        """Every request is answered 503 until `recover()`, as by a server that is down or restarting."""
        self._down.set()

    def recover(self) -> None:
        self._down.clear()

    def restart(self) -> None:
        """Forget every loaded adapter, as a restarted server does."""
        with self._lock:
            self.adapters.clear()

    def completions(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.route == "completions"]

    # ------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request, route: Route) -> web.Response:
        body = None
        if request.method == "POST":
            try:
                body = await request.json(loads=orjson.loads)
            except ValueError:
                body = None
        rec = RecordedRequest(route=route, body=body, arrived=time.monotonic())
        with self._lock:
            self.requests.append(rec)
        response = await self._answer(request, route, body, rec)
        rec.status = response.status
        return response

    async def _answer(self, request: web.Request, route: Route, body: Any, rec: RecordedRequest) -> web.Response:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            sent = request.headers.get("Authorization", "")
            return _error(401, f"Unauthorized: {sent}", "Unauthorized")  # echoed: the client must not repeat it
        if self._down.is_set():
            return _error(503, "Service Unavailable: the engine is restarting.", "ServiceUnavailableError")
        fault = self._faults.take(route)
        if fault and fault.kind == "429":
            return too_many(_error(429, "Too many requests, retry later.", "RateLimitError"), fault.retry_after_ms)
        if fault and fault.kind == "500":
            return _error(500, "Internal server error: the engine is overloaded.", "InternalServerError")
        if fault and fault.kind == "400":
            return _error(400, "This model's maximum context length is 2048 tokens.", "BadRequestError")
        if fault and fault.kind == "hang":
            await asyncio.sleep(fault.hang_s)
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        if route == "models":
            return json_reply(self._models())
        if route == "load":
            return self._load(body)
        if route == "unload":
            return self._unload(body)
        while not self._open.is_set():
            await asyncio.sleep(0.005)
        return self._complete(body, fault.kind if fault else None, rec)

    def _models(self) -> dict:
        cards = [{"id": self.model, "object": "model", "owned_by": "vllm", "root": self.model, "parent": None}]
        with self._lock:
            cards += [{"id": name, "object": "model", "owned_by": "vllm", "root": path, "parent": self.model}
                      for name, path in self.adapters.items()]
        return {"object": "list", "data": cards}

    def _load(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or not body.get("lora_name") or not body.get("lora_path"):
            return _error(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        name, path = str(body["lora_name"]), str(body["lora_path"])
        with self._lock:
            if name in self.adapters:
                return _error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
            if not (Path(path) / "adapter_config.json").is_file():
                return _error(404, f"No adapter found for {path}", "NotFoundError")
            self.adapters[name] = path
            self.loads.append((name, path))
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    def _unload(self, body: Any) -> web.Response:
        name = str(body.get("lora_name", "")) if isinstance(body, dict) else ""
        with self._lock:
            if name not in self.adapters:
                return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
            del self.adapters[name]
            self.unloads.append(name)
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    def _complete(self, body: Any, fault: str | None, rec: RecordedRequest) -> web.Response:
        problem = _check_completion_request(body)
        if problem:
            return _error(400, problem, "BadRequestError")
        model = body["model"]
        with self._lock:
            known = model == self.model or model in self.adapters
            adapter_path = self.adapters.get(model)
        if not known:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
        n, max_tokens = int(body.get("n", 1)), int(body["max_tokens"])
        call = SamplingCall(
            prompt=tuple(body["prompt"]), n=n, max_tokens=max_tokens,
            temperature=float(body.get("temperature", 1.0)), top_p=float(body.get("top_p", 1.0)),
            adapter_path=adapter_path, seed=_request_seed(self.seed, body),
        )
        stops = tuple(body.get("stop") or ())
        choices = []
        for index, (ids, logprobs) in enumerate(self._sampler(call)):
            ids, logprobs, finish, reason = cut(self.tokenizer, ids[:max_tokens], logprobs[:max_tokens],
                                                self._stop_ids, stops, max_tokens)
            choices.append(self._choice(index, ids, logprobs, finish, reason, body))
        reply = self._reply(model, choices, len(call.prompt))
        reply = _damage(reply, fault, n, max_tokens)
        rec.reply = reply if isinstance(reply, dict) else None
        if isinstance(reply, bytes):
            return web.Response(body=reply, content_type="application/json")
        return json_reply(reply)

    def _choice(self, index: int, ids: list[int], logprobs: list[float], finish: str,
                reason: Any, body: dict) -> dict:
        skip = bool(body.get("skip_special_tokens", True))
        as_ids = bool(body.get("return_tokens_as_token_ids", False))
        text = self.tokenizer.decode(ids, skip_special_tokens=skip)
        block = None
        if body.get("logprobs") is not None:
            tokens = [f"token_id:{t}" if as_ids else self.tokenizer.decode([t]) for t in ids]
            block = {
                "text_offset": list(range(len(ids))),
                "token_logprobs": logprobs,
                "tokens": tokens,
                "top_logprobs": [{tok: lp} for tok, lp in zip(tokens, logprobs)],
            }
        return {"index": index, "text": text, "logprobs": block, "finish_reason": finish, "stop_reason": reason}

    def _reply(self, model: str, choices: list[dict], prompt_tokens: int) -> dict:
        completion_tokens = sum(len(c["logprobs"]["tokens"]) if c["logprobs"] else 0 for c in choices)
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    # ------------------------------------------------------------ running

    thread_name = "fake-vllm"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        for method, path, route in (
            ("POST", "/v1/completions", "completions"),
            ("POST", "/v1/load_lora_adapter", "load"),
            ("POST", "/v1/unload_lora_adapter", "unload"),
            ("GET", "/v1/models", "models"),
        ):
            app.router.add_route(method, path, functools.partial(self._handle, route=route))
        return app

    def stop(self) -> None:
        self.release()  # a held completion would keep the server's loop from stopping
        super().stop()


# ---------------------------------------------------------------- replies


def _request_seed(base: int, body: dict) -> int:
    blob = orjson.dumps([base, body.get("model"), body.get("prompt"), body.get("seed")])
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big")


def _check_completion_request(body: Any) -> str:
    """vLLM's 400s for what we send, or "" when the request is fine."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    prompt = body.get("prompt")
    if not isinstance(prompt, list) or not prompt or not all(isinstance(t, int) and t >= 0 for t in prompt):
        return "this fake server takes the prompt as a list of token ids"
    if not isinstance(body.get("model"), str):
        return "'model' is required"
    n, max_tokens = body.get("n", 1), body.get("max_tokens")
    if not isinstance(n, int) or n < 1 or not isinstance(max_tokens, int) or max_tokens < 1:
        return "n and max_tokens must be integers >= 1"
    logprobs = body.get("logprobs")
    if logprobs is not None and (not isinstance(logprobs, int) or not 0 <= logprobs <= 20):
        return "logprobs must be an integer from 0 to 20"
    return ""


def _damage(reply: dict, fault: str | None, n: int, max_tokens: int) -> dict | bytes:
    """The reply as a misbehaving server would send it."""
    if fault == "malformed":
        text = orjson.dumps(reply)
        return text[: len(text) // 2]
    if fault == "short":
        return {**reply, "choices": reply["choices"][:-1]}
    if fault == "mismatch":
        first = reply["choices"][0]
        block = {**first["logprobs"], "token_logprobs": first["logprobs"]["token_logprobs"][:-1]}
        return {**reply, "choices": [{**first, "logprobs": block}, *reply["choices"][1:]]}
    if fault == "huge":
        from ..remote.reply import reply_limit

        return {**reply, "padding": "x" * reply_limit(n, max_tokens)}
    return reply


def _error(status: int, message: str, kind: str) -> web.Response:
    """An error as vLLM words it: its type, and the status as the code."""
    return error_reply(status, message, type=kind, code=status)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the fake on a fixed port (manual `run --generator` trials); Ctrl-C stops it."""
    import argparse

    from transformers import AutoTokenizer

    from ..policy.model import resolve_model

    parser = argparse.ArgumentParser(prog="python -m jobrl_async.testing.fake_vllm")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="tiny", help="whose tokenizer to use (a folder or 'tiny')")
    parser.add_argument("--served-model-name", default="")
    args = parser.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    server = FakeVLLM(tokenizer, model=args.served_model_name or args.model).start(args.host, args.port)
    print(f"fake vLLM serving '{server.model}' at {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
