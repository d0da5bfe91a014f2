"""The judge's limiter against a quota-shaped server, on an injected clock: the real `Limiter`
code, the server modelled as the fake judge enforces quotas (fixed 1-s windows, admission at
arrival, TPM charged at intake, 429 at once with the time to the next window, headers computed
when the reply leaves, `latency` after the call arrived).

    .venv/bin/python -m tests.support.limiter_sim --latency 0.01 0.5 1.5 3 --headers both

Printed, one JSON object per case: the share of the server's TPM (and RPM) quota charged over
the measured span (warm-up excluded), and the share of calls answered 429. A client "at 95%"
is configured at 95% of the server's quota, as the README advises.
"""

from __future__ import annotations

import argparse
import heapq
import inspect
import math
import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from jobrl_async.judge.limiter import Limiter, RateHeaders


@dataclass
class Server:
    """Fixed 1-s windows, as the fake judge and Azure count: `limit` per window, charged at arrival."""

    rpm: float
    tpm: float
    windows: dict[int, list[float]] = field(default_factory=dict)  # second -> [requests, tokens]

    def admit(self, now: float, tokens: float) -> float:
        """0 when admitted (charged), else seconds until the next window."""
        count, used = self.windows.setdefault(math.floor(now), [0.0, 0.0])
        if count + 1 > self.rpm / 60 + 1e-9 or used + tokens > self.tpm / 60 + 1e-9:
            return math.floor(now) + 1 - now
        self.windows[math.floor(now)] = [count + 1, used + tokens]
        return 0.0

    def headers(self, now: float) -> RateHeaders:
        count, used = self.windows.get(math.floor(now), [0.0, 0.0])
        reset = max(0.001, math.floor(now) + 1 - now)
        return RateHeaders(remaining_requests=max(0.0, math.floor(self.rpm / 60 - count)),
                           remaining_tokens=max(0.0, math.floor(self.tpm / 60 - used)),
                           limit_requests=self.rpm, limit_tokens=self.tpm,
                           reset_requests_s=reset, reset_tokens_s=reset)


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def _observe(lim: Limiter, headers: RateHeaders, sent: float, now: float) -> None:
    """`observe` as this revision of the limiter spells it (before issue 28 it took the send time)."""
    if "sent" in inspect.signature(lim.observe).parameters:
        lim.observe(headers, sent=sent, now=now)  # type: ignore[call-arg]
    else:
        lim.observe(headers, now=now)


def simulate(latency_s: float, headers: bool, *, rpm: float = 6000, tpm: float = 1_000_000,
             call_tokens: float = 1000, share: float = 0.95, concurrency: int = 256,
             duration_s: float = 60.0, warmup_s: float = 10.0, settle_429: bool = True,
             transit_s: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """`transit_s`: each call reaches the server up to this long after it was admitted (uniform),
    as the network and a busy event loop delay it: calls admitted near a window's end may be
    counted in the next one, and a rare 429 follows."""
    rng = random.Random(seed)
    clock = Clock()
    lim = Limiter(rpm * share, tpm * share, concurrency, window_s=1.0, clock=clock)
    server = Server(rpm, tpm)
    events: list[tuple[float, int, str, Any]] = []  # (time, seq, kind, lease)
    seq = 0
    charged = requests = calls = refused = 0.0
    while clock.now < duration_s:
        while events and events[0][0] <= clock.now + 1e-12:
            _, _, kind, (lease, ok) = heapq.heappop(events)
            if ok and headers:
                _observe(lim, server.headers(clock.now), lease.sent, clock.now)
            if ok:
                lease.settle(call_tokens)
            elif settle_429:
                lease.settle(0.0)
            lim.release()
        while lim.has_room and lim.wait_s(call_tokens, clock.now) <= 0:
            lease = lim.admit(call_tokens, clock.now)
            wait = server.admit(clock.now + rng.uniform(0.0, transit_s), call_tokens)
            measured = clock.now >= warmup_s
            calls += measured
            if wait > 0:
                refused += measured
                lim.backoff(wait)
                done = clock.now + 0.001  # a 429 is answered at once
            else:
                charged += call_tokens * measured
                requests += measured
                done = clock.now + latency_s
            seq += 1
            heapq.heappush(events, (done, seq, "reply", (lease, wait <= 0)))
        next_reply = events[0][0] if events else math.inf
        wait = lim.wait_s(call_tokens, clock.now) if lim.has_room else math.inf
        clock.now = max(clock.now + 1e-6, min(next_reply, clock.now + max(wait, 1e-6)))
    span = duration_s - warmup_s
    return {"latency_s": latency_s, "headers": headers, "tpm": tpm, "rpm": rpm, "client_share": share,
            "call_tokens": call_tokens, "tpm_quota_used": round(charged / span * 60 / tpm, 4),
            "rpm_quota_used": round(requests / span * 60 / rpm, 4),
            "http_429_share": round(refused / max(1.0, calls), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, nargs="+", default=[0.01, 0.5, 1.5, 3.0])
    p.add_argument("--headers", choices=["on", "off", "both"], default="both")
    p.add_argument("--rpm", type=float, default=6000)
    p.add_argument("--tpm", type=float, default=1_000_000)
    p.add_argument("--call-tokens", type=float, default=1000)
    p.add_argument("--share", type=float, default=0.95, help="the client's rate as a share of the server's")
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--transit", type=float, default=0.0, help="calls reach the server up to this late (s)")
    p.add_argument("--keep-429-charge", action="store_true",
                   help="leave a refused call's charge in the window (the client before issue 28)")
    args = p.parse_args()
    for latency in args.latency:
        for on in {"on": [True], "off": [False], "both": [True, False]}[args.headers]:
            print(orjson.dumps(simulate(latency, on, rpm=args.rpm, tpm=args.tpm, call_tokens=args.call_tokens,
                                        share=args.share, concurrency=args.concurrency,
                                        duration_s=args.duration, settle_429=not args.keep_429_charge,
                                        transit_s=args.transit)).decode(), flush=True)


if __name__ == "__main__":
    main()
