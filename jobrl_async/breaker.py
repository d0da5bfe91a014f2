"""One circuit breaker: failures in a row open it, a probe every interval closes it.

    closed --`threshold` failures in a row, or open()--> open
    open   --the probe answers, or a call in flight succeeds--> closed
    open   --the probe fails with an error `fatal` says probing cannot fix--> stopped (for good)
    either --stop(error): the caller's verdict (a call met a refused key)--> stopped

Open, callers of `wait` wait and one probe task runs: every `interval_s` it awaits `probe()`;
True closes the breaker, False or an error probes again. Stopped, `wait` raises that error for
every waiter and every later caller; the breaker never opens nor closes again.

Invariant: one probe task runs exactly while the breaker is open, none otherwise.

The policy stays with the caller: what counts as a failure (it calls `failed`), what the probe
asks, what is logged and counted (the hooks `on_open(reason)`, `on_close(paused_s)`,
`on_probe_failed(error)`, called for every probe that raised, before a stop, and `on_stop(error)`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal


def ignore(*args: Any) -> None:
    """A hook that does nothing."""


def never(error: BaseException) -> bool:
    """The default `fatal`: every error is worth probing again."""
    return False


class Breaker:
    """The state machine above; `probe()` returns True when calls may flow again."""

    def __init__(self, probe: Callable[[], Awaitable[bool]], interval_s: float, *, threshold: int = 1,
                 fatal: Callable[[BaseException], bool] = never, on_open: Callable[[str], Any] = ignore,
                 on_close: Callable[[float], Any] = ignore, on_probe_failed: Callable[[Exception], Any] = ignore,
                 on_stop: Callable[[BaseException], Any] = ignore, name: str = "breaker-probe") -> None:
        self.probe, self.interval_s, self.threshold, self.fatal = probe, interval_s, threshold, fatal
        self.on_open, self.on_close, self.on_probe_failed, self.on_stop = on_open, on_close, on_probe_failed, on_stop
        self.name = name  # the probe task's
        self.state: Literal["closed", "open", "stopped"] = "closed"
        self.failures = 0  # in a row
        self.paused_since = 0.0  # time.monotonic() when it last opened
        self.error: BaseException | None = None  # what stopped it
        self._flowing = asyncio.Event()  # set while closed, and once stopped (the waiters raise `error`)
        self._flowing.set()
        self._task: asyncio.Task | None = None

    @property
    def paused(self) -> bool:
        """Open or stopped: calls do not flow."""
        return self.state != "closed"

    async def wait(self) -> None:
        """Returns at once while closed, when it closes while open; raises what stopped it."""
        await self._flowing.wait()
        if self.error is not None:
            raise self.error

    def failed(self, reason: str) -> None:
        """A call failed; the `threshold`-th in a row opens the breaker."""
        self.failures += 1
        if self.failures >= self.threshold:
            self.open(reason)

    def succeeded(self) -> None:
        """A call succeeded: the count starts again, and an open breaker closes (its probe is cancelled)."""
        self.failures = 0
        if self.state == "open":
            self._close()

    def open(self, reason: str) -> None:
        """Open now and start probing; nothing when already open or stopped."""
        if self.state != "closed":
            return
        self.state, self.paused_since = "open", time.monotonic()
        self._flowing.clear()
        self.on_open(reason)
        self._task = asyncio.create_task(self._probe_until_closed(), name=self.name)

    def stop(self, error: BaseException) -> None:
        """Stop for good: the probe ends, and the waiters and every later caller raise `error`."""
        if self.state == "stopped":
            return
        self.state, self.error = "stopped", error
        self._end_probe()
        self._flowing.set()
        self.on_stop(error)

    async def _probe_until_closed(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                healthy = await self.probe()
            except Exception as e:
                self.on_probe_failed(e)
                if self.fatal(e):
                    self.stop(e)
                    return
            else:
                if healthy:
                    self._close()
                    return

    def _close(self) -> None:
        if self.state != "open":  # stopped stays stopped (a probe ending after a stop changes nothing)
            return
        self._end_probe()
        self.state, self.failures = "closed", 0
        self._flowing.set()
        self.on_close(time.monotonic() - self.paused_since)

    def _end_probe(self) -> None:
        """Cancel the probe task, unless it is the one ending the probing."""
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._task = None

    async def aclose(self) -> None:
        """Cancel the probe task and wait for it (the end of the breaker's life)."""
        probe, self._task = self._task, None
        if probe is not None:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
