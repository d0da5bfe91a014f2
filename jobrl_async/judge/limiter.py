"""One endpoint's quota: requests and tokens per window, concurrent calls, and what the server says.

Servers count quota over short fixed windows (Azure: 1 or 10 s; 6,000 RPM is at most 100
requests in any second) and charge tokens at intake as prompt + `max_tokens`. A token bucket
with rate r and burst b admits r + b in some window, which such a server refuses; so
admission here is a sliding window: a call starts only if the window ending now, with it,
stays within `limit = quota / 60 x window_s`:

    time_until(cost, now) = 0                              if used(now) + cost <= limit
                          = (t_i + window_s) - now         the first admission t_i whose expiry makes room

No window of length `window_s` ever holds more than `limit` x WINDOW_FILL (whole calls fill it;
never more than a quota the server declares), so neither does any window the server counts. A cost above the whole limit (one huge
prompt) waits for an empty window. Inside the window, calls are paced (`Gcra`: a burst of at
most a quarter window's quota, then evenly, at the configured rate on average), so a window's
quota never leaves in one instant.

Four things lower the limit below the configured quota, never raise it above:
- `Aimd`: after a 429 the endpoint waits the server's Retry-After, then comes back at
  `decrease` x its rate (one cut per window: a burst of 429s from one window is one signal),
  and recovers additively (`recover_per_s`) to the full rate while no 429 comes;
- `x-ratelimit-limit-requests` / `-tokens` (per minute): a server that grants less than
  configured is believed;
- `x-ratelimit-remaining-requests` / `-tokens` (with `-reset-*` when present): a `ServerView`
  that says how much is left for the calls sent after the reply came, until the reset (a few
  windows at most: a server's absurd reset never holds an endpoint for long); a quota shared
  with another client shows up here before it shows up as 429s;
- the same headers as a share: what we used in the window ending now plus what is left, over
  our limit, is the part of the quota that is ours; below 1, the endpoint paces to it
  (recovering like AIMD), so it shares the window with the other client instead of bursting
  into its limit.

A server reports `remaining` when it answers, so it has already counted every call that
arrived while the observed one was under way: the view is anchored at the reply, never at the
send (counting the calls sent meanwhile a second time halved throughput at 1.5 s latency).

Tokens are charged before the call from an estimate (scaled by what the server counted for the
calls before it: `prompts.PromptScale`) and settled afterwards from `usage`.
Written by hand: no limiter library settles a charge after the fact, follows response
headers, or admits by sliding window over two quotas taken together.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from ..config import JudgeConfig

EPS = 1e-9
BURST_SHARE = 0.25  # a burst of at most a quarter window's quota, then calls are paced evenly
# Calls are whole: a window of 15,833 tokens holds 16 calls of 950 (96%), so a cap at exactly the
# configured rate loses up to a call per window. A window may hold this much more, so that whole
# calls fill it, while the pace keeps the average at the configured rate: the README's rates
# are 95% of the quota, so a window stays under 98% of it. A server that declares its quota
# (`x-ratelimit-limit-*`) is believed: never above that.
WINDOW_FILL = 1.025
# Our calls reach the server a little after we admit them (the network; on a busy machine, its
# event loop: 0.2 s measured on 2 loaded cores), so the server's window holds some we admitted
# before our window ending now began. The share rule counts ours over this much more of a window:
# its share comes out high rather than low (at 300 ms latency a spurious cut to 0.69 cost 8% of
# the quota); another client using less than about this much of the quota is left to the view.
TRANSIT_SHARE = 0.25
# A server's view (remaining until its reset) lives at most this many windows: a reset of
# "99999h" or 1e9 s would otherwise hold an endpoint for years; a 429 still says the rest.
VIEW_LIFE_WINDOWS = 3.0


# ------------------------------------------------------------------ pure arithmetic


@dataclass(slots=True)
class Admission:
    """One charge in a window: when, and how much (tokens are corrected by `settle`)."""

    at: float
    cost: float


@dataclass
class SlidingWindow:
    """Pure: the charges of the last `window_s` seconds, and when a new one fits under a limit."""

    window_s: float = 1.0
    log: deque[Admission] = field(default_factory=deque)
    used: float = 0.0  # sum of the costs in `log`
    recent: deque[Admission] = field(default_factory=deque)  # the last two windows' (see `spent_between`)

    def expire(self, now: float) -> None:
        while self.log and self.log[0].at <= now - self.window_s + EPS:
            self.used -= self.log.popleft().cost
        if not self.log:
            self.used = 0.0  # no float drift across an empty window
        while self.recent and self.recent[0].at <= now - 2 * self.window_s:
            self.recent.popleft()

    def time_until(self, cost: float, limit: float, now: float) -> float:
        """Seconds from `now` until `cost` fits in the window ending then (a cost above `limit`
        waits for an empty window)."""
        self.expire(now)
        need = min(cost, limit)
        if self.used + need <= limit + EPS:
            return 0.0
        used = self.used
        for a in self.log:  # oldest first: each expiry frees its cost
            used -= a.cost
            if used + need <= limit + EPS:
                return max(0.0, a.at + self.window_s - now)
        return self.window_s  # unreachable: an empty window fits any cost up to `limit`

    def take(self, cost: float, now: float) -> Admission:
        self.expire(now)
        admission = Admission(now, cost)
        self.log.append(admission)
        self.recent.append(admission)
        self.used += cost
        return admission

    def settle(self, admission: Admission, actual: float) -> None:
        """Replace a charge by the server's count (a no-op once it has left the window)."""
        if any(a is admission for a in self.log):
            self.used += actual - admission.cost
        admission.cost = actual

    def spent_between(self, start: float, end: float) -> float:
        """What was admitted in (start, end], as settled (at most two windows back)."""
        return sum(a.cost for a in self.recent if start < a.at <= end)


@dataclass
class Gcra:
    """Pure: paces admissions at `interval` per unit of cost, with at most `tolerance_s` of burst.

    The sliding window caps each window; this spreads the calls inside it, so a window's worth
    is not sent in one instant (a burst's sends leave over tens of ms, and a server whose window
    boundary falls in that spread would count part of two bursts together).
    """

    tat: float = -math.inf  # theoretical arrival time of the next unit

    def time_until(self, interval: float, tolerance_s: float, now: float) -> float:
        return max(0.0, self.tat - tolerance_s - now)

    def take(self, cost: float, interval: float, now: float) -> None:
        self.tat = max(self.tat, now) + cost * interval

    def settle(self, correction: float, interval: float) -> None:
        """A charge corrected after the fact moves the pace by as much: pacing follows the
        server's count, not our estimate (a prompt estimate 1% high would pace 1% slow)."""
        self.tat += correction * interval


@dataclass
class Aimd:
    """Pure: the share (floor..1) of the configured rate an endpoint may use, after 429s."""

    # A 429 at our own rate is mostly jitter (calls reach the server late and land in its next
    # window): 0.85 and 2%/s cost about a second of quota per 429 (89.7% of the quota with 0.6%
    # of 429s, simulated at 0.1 s of transit); 0.9 and 5%/s, 93.7%, while a shared quota still
    # converges in a few windows (tests/support/limiter_sim.py).
    decrease: float = 0.9  # multiplicative cut after a 429
    recover_per_s: float = 0.05  # additive recovery per second without one
    floor: float = 0.2
    hold_s: float = 1.0  # at most one cut per this long: one window's 429s are one signal
    scale: float = 1.0
    updated: float = 0.0
    last_cut: float = -math.inf

    def at(self, now: float) -> float:
        return min(1.0, self.scale + max(0.0, now - self.updated) * self.recover_per_s)

    def cap(self, share: float, now: float) -> None:
        """Lower the share to `share` at once (never raise it); recovery goes on from there."""
        self.scale, self.updated = max(self.floor, min(self.at(now), share)), now

    def on_429(self, now: float, resume_at: float) -> None:
        """A 429 at `now`; the endpoint is paused until `resume_at`, recovery starts there."""
        scale = self.at(now)
        if now - self.last_cut >= self.hold_s:
            scale = max(self.floor, scale * self.decrease)
            self.last_cut = now
        self.scale, self.updated = scale, max(now, resume_at)


@dataclass(slots=True)
class ServerView:
    """What the server said was left when it answered: `remaining` for the calls we send from
    then on, until `until` (the calls sent before it were counted by the server already)."""

    remaining: float
    until: float
    spent: float = 0.0  # what we sent since the view came

    def time_until(self, cost: float, now: float) -> float:
        if now >= self.until or self.spent + cost <= self.remaining + EPS:
            return 0.0
        return self.until - now


@dataclass(frozen=True, slots=True)
class RateHeaders:
    """The `x-ratelimit-*` headers of one response (None where absent or unreadable)."""

    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    limit_requests: float | None = None  # per minute
    limit_tokens: float | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> "RateHeaders":
        get = {k.lower(): v for k, v in headers.items()}.get
        return cls(
            remaining_requests=_number(get("x-ratelimit-remaining-requests")),
            remaining_tokens=_number(get("x-ratelimit-remaining-tokens")),
            limit_requests=_number(get("x-ratelimit-limit-requests")),
            limit_tokens=_number(get("x-ratelimit-limit-tokens")),
            reset_requests_s=duration_s(get("x-ratelimit-reset-requests")),
            reset_tokens_s=duration_s(get("x-ratelimit-reset-tokens")),
        )

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.remaining_requests, self.remaining_tokens,
                                       self.limit_requests, self.limit_tokens))


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value >= 0 else None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def duration_s(text: str | None) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "20ms", "0.5s") or plain seconds, in seconds."""
    if not text:
        return None
    text = text.strip().lower()
    plain = _number(text)
    if plain is not None:
        return plain
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    seconds = sum(float(n) * scale[u] for n, u in parts)
    return seconds if math.isfinite(seconds) else None  # 400 digits + "s" reads as inf


# ------------------------------------------------------------------ one endpoint's limiter


class Limiter:
    """One endpoint's admission: both windows taken together, a concurrency cap, 429 pauses.

    `slot` is the self-contained way in (a FIFO turn, then the wait); the pool routes with
    `wait_s` / `has_room` / `admit` itself, across endpoints.
    """

    def __init__(self, rpm: float, tpm: float, max_concurrency: int, window_s: float = 1.0,
                 clock: Callable[[], float] | None = None, aimd: Aimd | None = None) -> None:
        self.now = clock or time.monotonic
        # 0: no quota (a local server): unbounded here, so only the concurrency cap (and what a
        # server's x-ratelimit-limit-* headers declare) holds calls back
        self.rpm, self.tpm = (float(v) if v > 0 else math.inf for v in (rpm, tpm))
        self.window_s = window_s
        self.server_rpm = self.server_tpm = math.inf  # what x-ratelimit-limit-* granted
        self.requests = SlidingWindow(window_s)
        self.tokens = SlidingWindow(window_s)
        self.pace = {"requests": Gcra(), "tokens": Gcra()}
        self.burst_s = window_s * BURST_SHARE
        self.aimd = aimd or Aimd(hold_s=window_s, updated=self.now())
        # the share of each quota the server's headers say is ours (another client uses the rest)
        self.follow = {name: Aimd(floor=0.05, updated=self.now()) for name in ("requests", "tokens")}
        self.views: dict[str, ServerView] = {}  # "requests" / "tokens" -> the server's latest word
        self.paused_until = -math.inf
        self.max_concurrency = max_concurrency
        self.in_flight = 0
        self._turn = asyncio.Lock()  # FIFO: one waiter at a time computes its wait
        self._freed = asyncio.Event()

    @classmethod
    def from_config(cls, cfg: JudgeConfig, rpm: float | None = None, tpm: float | None = None) -> "Limiter":
        return cls(cfg.rpm if rpm is None else rpm, cfg.tpm if tpm is None else tpm, cfg.max_concurrency,
                   cfg.window_s)

    # -- the arithmetic, on the injected clock

    def limits(self, now: float) -> tuple[float, float]:
        """(requests, tokens) allowed per window now: configured, capped by the server, scaled by AIMD."""
        scale = self.aimd.at(now)
        rq, tk = self.configured_limits()
        requests = max(1.0, rq * scale * self.follow["requests"].at(now))
        tokens = max(1.0, tk * scale * self.follow["tokens"].at(now))
        return requests, tokens

    def window_caps(self, requests: float, tokens: float) -> tuple[float, float]:
        """What one window may hold, for these limits: WINDOW_FILL times them, but never above a
        quota the server declares (nor below the limits)."""
        per_window = self.window_s / 60.0

        def cap(limit: float, server_per_minute: float) -> float:
            return min(limit * WINDOW_FILL, max(limit, server_per_minute * per_window))

        return cap(requests, self.server_rpm), cap(tokens, self.server_tpm)

    def configured_limits(self) -> tuple[float, float]:
        """(requests, tokens) per window: configured, capped by what the server says it grants."""
        per_window = self.window_s / 60.0
        return min(self.rpm, self.server_rpm) * per_window, min(self.tpm, self.server_tpm) * per_window

    def wait_s(self, tokens: float, now: float) -> float:
        """Seconds until a call of `tokens` may start here (concurrency aside)."""
        if now < self.paused_until:
            return self.paused_until - now
        rq, tk = self.limits(now)
        cap_rq, cap_tk = self.window_caps(rq, tk)
        waits = [self.requests.time_until(1, cap_rq, now), self.tokens.time_until(tokens, cap_tk, now),
                 self.pace["requests"].time_until(self.window_s / rq, self.burst_s, now),
                 self.pace["tokens"].time_until(self.window_s / tk, self.burst_s, now)]
        for name, cost in (("requests", 1.0), ("tokens", tokens)):
            if (view := self.views.get(name)) is not None:
                waits.append(view.time_until(cost, now))
        return max(waits)

    @property
    def has_room(self) -> bool:
        return self.in_flight < self.max_concurrency

    def admit(self, tokens: float, now: float) -> "Lease":
        rq, tk = self.limits(now)
        self.pace["requests"].take(1, self.window_s / rq, now)
        self.pace["tokens"].take(tokens, self.window_s / tk, now)
        lease = Lease(self, tokens, sent=now, requests=self.requests.take(1, now),
                      tokens=self.tokens.take(tokens, now), interval=self.window_s / tk,
                      request_interval=self.window_s / rq)
        for name, cost in (("requests", 1.0), ("tokens", tokens)):
            if (view := self.views.get(name)) is not None and now < view.until:
                view.spent += cost
        self.in_flight += 1
        return lease

    def release(self) -> None:
        self.in_flight -= 1
        self._freed.set()

    def backoff(self, seconds: float) -> None:
        """A 429: hold this endpoint for `seconds` (its Retry-After), then come back slower."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            return
        now = self.now()
        self.paused_until = max(self.paused_until, now + seconds)
        self.aimd.on_429(now, self.paused_until)

    def observe(self, headers: RateHeaders, now: float) -> None:
        """Follow the server: lower this endpoint to what its headers, read when its reply came
        at `now`, say is left (never raise it)."""
        if headers.limit_requests:
            self.server_rpm = headers.limit_requests
        if headers.limit_tokens:
            self.server_tpm = headers.limit_tokens
        for name, remaining, reset_s, window in (
            ("requests", headers.remaining_requests, headers.reset_requests_s, self.requests),
            ("tokens", headers.remaining_tokens, headers.reset_tokens_s, self.tokens),
        ):
            if remaining is None:
                continue
            life = min(self.window_s if reset_s is None else reset_s, VIEW_LIFE_WINDOWS * self.window_s)
            self.views[name] = ServerView(remaining, now + life)
            # What the server says we could have used in its window: ours in the window ending
            # now (and TRANSIT_SHARE more) plus what is left. Below our limit, someone else uses
            # the rest: pace to that share from now on (recovering) rather than burst into it.
            limit = self.configured_limits()[0 if name == "requests" else 1]
            ours = window.spent_between(now - self.window_s * (1 + TRANSIT_SHARE), now)
            share = (ours + remaining) / limit
            if share < 1.0:
                self.follow[name].cap(share, now)

    # -- the self-contained way in

    async def wait_turn(self, tokens: float) -> "Lease":
        async with self._turn:
            while True:
                now = self.now()
                wait = self.wait_s(tokens, now)
                if wait <= 0 and self.has_room:
                    return self.admit(tokens, now)
                self._freed.clear()
                timeout = wait if self.has_room else None
                try:
                    await asyncio.wait_for(self._freed.wait(), timeout)
                except TimeoutError:
                    pass

    @asynccontextmanager
    async def slot(self, tokens: float) -> AsyncIterator["Lease"]:
        """Hold one concurrent call and its share of both quotas for the body of the block."""
        lease = await self.wait_turn(tokens)
        try:
            yield lease
        finally:
            self.release()


@dataclass(slots=True)
class Lease:
    """One call's place in a limiter; `settle` corrects its token charge from `usage`."""

    limiter: Limiter
    estimated: float
    sent: float
    requests: Admission
    tokens: Admission
    interval: float  # the token pace's seconds per token when admitted
    request_interval: float = 0.0  # the request pace's seconds per request when admitted
    settled: bool = False

    def settle(self, actual: float) -> None:
        if not self.settled:
            self.settled = True
            self.limiter.pace["tokens"].settle(actual - self.tokens.cost, self.interval)
            self.limiter.tokens.settle(self.tokens, actual)

    def refuse(self) -> None:
        """The server refused the call before intake (a 429): it charged nothing, so neither
        window nor pace keeps it (a phantom charge would hold the endpoint after the Retry-After)."""
        if not self.settled:
            self.settle(0.0)
            self.limiter.pace["requests"].settle(-self.requests.cost, self.request_interval)
            self.limiter.requests.settle(self.requests, 0.0)
