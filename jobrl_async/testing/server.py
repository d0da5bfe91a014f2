"""What every fake service shares: an aiohttp app served on loopback from its own thread and
event loop, scripted faults, and replies in the OpenAI JSON shapes.

A fake runs in its own thread and loop so tests and benchmarks can drive it from synchronous
code or from another event loop, and neither loop ever blocks the other.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Self

import orjson
from aiohttp import web


class ThreadedServer:
    def __init__(self, app: web.Application, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self._app, self._name, self._host, self._port = app, name, host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> str:
        """Serve; returns the base URL (the port is chosen by the OS when 0)."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=self._name, daemon=True)
        self._thread.start()
        if not ready.wait(10) or not self.url:
            raise RuntimeError(f"the {self._name} server did not start")
        return self.url

    def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._serve())
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _serve(self) -> None:
        # a hung handler ends when its client gives up, as a real server's would
        self._runner = web.AppRunner(self._app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None


class Served:
    """`start()` / `stop()` / `with` for a fake: `app()` served by a `ThreadedServer`; sets `url`."""

    thread_name = "fake-server"
    url: str = ""
    _server: ThreadedServer | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        self._server = ThreadedServer(self.app(), self.thread_name, host, port)
        self.url = self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Fault:
    """One scripted misbehaviour, for the next `times` requests it is aimed at."""

    kind: str
    times: int
    target: str | None  # the route or criterion it is aimed at; None: any request
    retry_after_ms: int  # for 429
    hang_s: float  # for hang: longer than the client's timeout


class Faults:
    """Faults queued in order: a request meets the first one aimed at it (or at any request)."""

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self._lock = threading.Lock()  # scripted from the test's thread, met in the server's

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._queue.append(fault)

    def take(self, target: str | None) -> Fault | None:
        """The fault for a request about `target`, used up after its `times` requests."""
        with self._lock:
            fault = next((f for f in self._queue if f.target in (None, target)), None)
            if fault is None:
                return None
            fault.times -= 1
            if fault.times <= 0:
                self._queue.remove(fault)
            return fault


def json_reply(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: orjson.dumps(o).decode())


def error_reply(status: int, message: str, *, type: str, code: Any, param: str | None = None) -> web.Response:
    """An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""
    return json_reply({"error": {"message": message, "type": type, "param": param, "code": code}}, status)


def too_many(response: web.Response, retry_after_ms: int) -> web.Response:
    """`response` (a 429) with the waits a rate limiter asks for: in ms, and in whole seconds."""
    response.headers["retry-after-ms"] = str(retry_after_ms)
    response.headers["retry-after"] = str(max(1, math.ceil(retry_after_ms / 1000)))
    return response
