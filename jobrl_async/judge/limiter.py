"""One limiter for every judge call in the process: requests/min, tokens/min, concurrent calls.

Two token buckets (requests and tokens), each `burst_s` seconds of quota deep, refilled at
quota/60 per second. Over any window of W seconds a bucket lets through at most
`capacity + rate x W`: with the default 0.1 s depth, 600 RPM is at most 11 requests in any
second and 101 in any 10 s (Azure enforces RPM over 1-10 s windows, so a minute-deep bucket
earns 429s below quota).

    time_until(cost, now) = max(0, (min(cost, capacity) - level(now)) / rate)

Tokens are charged before the call from an estimate (prompt + max_tokens, as the server
charges at intake) and settled after it from the server's count; a bucket may go into
debt, which later callers wait out. A 429 pauses both buckets for everyone until its
Retry-After and empties them, so the queue restarts at the quota's pace, not with a burst.

Written by hand rather than with aiolimiter: its leaky bucket cannot settle a charge after
the fact, cannot be paused by one caller for all, and serves small waiters first (a
tokens bucket built on it would starve long prompts); two of them also cannot be taken
together, so a request could hold one quota while it waits for the other.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ..config import JudgeConfig


@dataclass(slots=True)
class TokenBucket:
    """Pure arithmetic: `level` tokens available at time `updated`, refilled at `rate`/s."""

    capacity: float
    rate: float
    level: float
    updated: float = 0.0

    @classmethod
    def per_minute(cls, quota: float, burst_s: float, now: float = 0.0) -> "TokenBucket":
        rate = quota / 60.0
        capacity = max(rate * burst_s, 1.0)  # at least one whole request can ever pass
        return cls(capacity=capacity, rate=rate, level=capacity, updated=now)

    def level_at(self, now: float) -> float:
        if now <= self.updated:  # a paused bucket does not refill before its pause ends
            return self.level
        return min(self.capacity, self.level + (now - self.updated) * self.rate)

    def time_until(self, cost: float, now: float) -> float:
        """Seconds from `now` until `cost` can be taken (a cost above capacity waits for a full bucket)."""
        need = min(cost, self.capacity)
        start = max(now, self.updated)
        missing = need - self.level_at(start)
        return (start - now) + max(0.0, missing / self.rate)

    def take(self, cost: float, now: float) -> None:
        """Charge `cost` at `now`; the level may go negative (debt) for a cost above capacity."""
        self.level = self.level_at(now) - cost
        self.updated = max(now, self.updated)

    def settle(self, estimated: float, actual: float, now: float) -> None:
        """Replace an earlier charge of `estimated` by `actual`: refund or charge the difference."""
        self.level = min(self.capacity, self.level_at(now) + estimated - actual)
        self.updated = max(now, self.updated)

    def pause(self, until: float) -> None:
        """Empty the bucket and keep it empty until `until` (a server told us to back off)."""
        if until > self.updated:
            self.level = min(self.level, 0.0)
            self.updated = until


class Limiter:
    """The shared async wrapper: FIFO waiters, both buckets taken together, a concurrency cap.

    The Judge owns one and every backend call goes through `slot`; share it by passing the
    same Judge (or Limiter) to every stage that judges, so the process has one quota.
    """

    def __init__(
        self,
        rpm: float,
        tpm: float,
        max_concurrency: int,
        burst_s: float = 0.1,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.now = clock or time.monotonic  # the loop's clock is uvloop's cached ms tick
        now = self.now()
        self.requests = TokenBucket.per_minute(rpm, burst_s, now)
        self.tokens = TokenBucket.per_minute(tpm, burst_s, now)
        self.max_concurrency = max_concurrency
        self._calls = asyncio.Semaphore(max_concurrency)
        self._turn = asyncio.Lock()  # one waiter at a time computes its wait: FIFO, no starvation
        self.in_flight = 0

    @classmethod
    def from_config(cls, cfg: JudgeConfig) -> "Limiter":
        return cls(cfg.rpm, cfg.tpm, cfg.max_concurrency, cfg.burst_s)

    def wait_s(self, tokens: float, now: float) -> float:
        return max(self.requests.time_until(1, now), self.tokens.time_until(tokens, now))

    @asynccontextmanager
    async def slot(self, tokens: float) -> AsyncIterator["Lease"]:
        """Hold one concurrent call and its share of both quotas for the body of the block."""
        async with self._calls:
            async with self._turn:
                while (wait := self.wait_s(tokens, self.now())) > 0:
                    # re-check after waking: a 429 may have pushed the pause further out
                    await asyncio.sleep(wait)
                now = self.now()
                self.requests.take(1, now)
                self.tokens.take(tokens, now)
            self.in_flight += 1
            try:
                yield Lease(self, tokens)
            finally:
                self.in_flight -= 1

    def pause(self, seconds: float) -> None:
        """Hold every caller for `seconds` (a 429's Retry-After) and restart without a burst."""
        if seconds > 0 and math.isfinite(seconds):
            until = self.now() + seconds
            self.requests.pause(until)
            self.tokens.pause(until)


@dataclass(slots=True)
class Lease:
    """One call's place in the limiter; `settle` corrects its token charge from `usage`."""

    limiter: Limiter
    estimated: float
    settled: bool = False

    def settle(self, actual: float) -> None:
        if not self.settled:
            self.settled = True
            self.limiter.tokens.settle(self.estimated, actual, self.limiter.now())
