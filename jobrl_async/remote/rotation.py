"""Which servers take requests: the round robin, servers out of rotation, the pause and the probe.

A server leaves the rotation after `max_retries + 1` failed attempts in a row, or at once when
it refuses us (an adapter it will not load, a 401 mid-run), and its share goes to the others
(`generator_server_down`). With none left, generation pauses (`generator_paused`): requests
wait. Every `backoff_max_s` a probe tries each server out of rotation; one that answers rejoins
(`generator_server_up`, or `generator_resumed` with `paused_s`). The probe runs in one
`breaker.Breaker`, open while a server is out of rotation.

Invariant: requests flow (`wait_serving` returns) exactly while at least one server is in
rotation, and a server out of rotation comes back only through a probe that succeeded on it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from ..breaker import Breaker
from ..ops.log import host_of
from .http import message_of
from .options import RemoteStats, log


class NoServer(Exception):
    """Every server is out of rotation: the request waits for the probe, then starts again."""


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


class RotationBreaker:
    """The rotation's events on the event loop: servers leave, generation pauses, the probe runs.

    `probe(url)` returns when `url` can serve again, and raises (anything) when it cannot yet.
    """

    def __init__(self, rotation: Rotation, probe: Callable[[str], Awaitable[None]], interval_s: float,
                 stats: RemoteStats, scrub: Callable[[str], str]) -> None:
        self.rotation, self.stats = rotation, stats
        self._probe, self._interval_s, self._scrub = probe, interval_s, scrub
        self._serving = asyncio.Event()  # set while a server is in rotation: requests flow
        self._serving.set()
        self._paused_at = 0.0
        self._out_since: dict[str, float] = {}
        # open while a server is out of rotation; closes once the probe has brought every one back
        self._breaker = Breaker(self._probe_out, interval_s, on_probe_failed=self._probe_crashed,
                                name="generator-probe")

    @property
    def paused(self) -> bool:
        return not self._serving.is_set()

    async def wait_serving(self) -> None:
        """Returns at once while a server is in rotation; paused, when the probe brings one back."""
        await self._serving.wait()

    def succeeded(self, url: str) -> None:
        self.rotation.succeeded(url)

    def failed(self, url: str, error: Exception) -> None:
        """One failed attempt on `url`; the last of `max_failures` in a row takes it out."""
        if self.rotation.failed(url):
            self.take_out(url, f"{self.rotation.max_failures} attempts in a row failed, the last: {error}")

    def take_out(self, url: str, reason: str) -> None:
        """`url` takes no requests until the probe brings it back; with none left, generation pauses."""
        reason = self._scrub(reason)
        if not self.rotation.take_out(url, reason):
            return
        self._out_since[url] = time.monotonic()
        if self.rotation.serving == 0:
            self._serving.clear()
            self._paused_at = time.monotonic()
            self.stats.paused, self.stats.pauses = True, self.stats.pauses + 1
            log().warning("generator_paused", reason=reason, server=host_of(url), probe_interval_s=self._interval_s)
        else:
            log().warning("generator_server_down", server=host_of(url), reason=reason,
                          serving=self.rotation.serving)
        self._breaker.open(reason)  # already open: its probe takes this server in its next round

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

    async def _probe_out(self) -> bool:
        """Each server out of rotation is probed; one that answers rejoins. True when none is left out."""
        for url in list(self.rotation.out):
            try:
                await self._probe(url)
            except Exception as e:  # whatever it is (a restart, a rotated key), keep probing and say why
                log().warning("generator_probe_failed", server=host_of(url), reason=self._scrub(message_of(e)))
            else:
                self._bring_back(url)
        return not self.rotation.out

    def _probe_crashed(self, error: Exception) -> None:
        """A bug in a probe round (each server's own failure is caught and logged in the round):
        said with its traceback (the log redacts secrets); the next round runs at the next interval."""
        log().error("generator_probe_failed", reason=f"{type(error).__name__}: {error}", exc_info=error)

    async def aclose(self) -> None:
        await self._breaker.aclose()
