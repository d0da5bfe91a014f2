"""The judge's limiter: token-bucket arithmetic (pure, no clock) and the shared async wrapper."""

from __future__ import annotations

import asyncio

import pytest

from jobrl_async.config import JudgeConfig
from jobrl_async.judge.limiter import Limiter, TokenBucket


def greedy_takes(bucket: TokenBucket, cost: float, until: float) -> list[float]:
    """The times a caller that always takes as soon as allowed gets through, up to `until`."""
    now, times = 0.0, []
    while (now := now + bucket.time_until(cost, now)) < until:
        bucket.take(cost, now)
        times.append(now)
    return times


def most_in_any_window(times: list[float], window: float) -> int:
    return max(sum(1 for t in times if start <= t < start + window - 1e-9) for start in times)


# ---------------------------------------------------------------- arithmetic


def test_depth_is_burst_seconds_of_quota():
    bucket = TokenBucket.per_minute(600, burst_s=1.0)
    assert (bucket.capacity, bucket.rate, bucket.level) == (10.0, 10.0, 10.0)
    assert TokenBucket.per_minute(600, burst_s=0.5).capacity == 5.0
    assert TokenBucket.per_minute(6, burst_s=1.0).capacity == 1.0  # never below one request


def test_full_bucket_lets_a_burst_through_then_paces_at_the_rate():
    bucket = TokenBucket.per_minute(600, burst_s=1.0)
    for _ in range(10):
        assert bucket.time_until(1, 0.0) == 0.0
        bucket.take(1, 0.0)
    assert bucket.time_until(1, 0.0) == pytest.approx(0.1)
    assert bucket.time_until(3, 0.05) == pytest.approx(0.25)


def test_600_rpm_is_at_most_about_10_requests_in_any_second():
    times = greedy_takes(TokenBucket.per_minute(600, burst_s=1.0), 1, until=60.0)
    assert len(times) == pytest.approx(610, abs=1)  # the 10-deep burst plus 60 s at 10/s
    steady = [t for t in times if t >= 1.0]
    assert most_in_any_window(steady, 1.0) == 10
    assert most_in_any_window(times, 1.0) <= 10 + 10  # capacity + rate x window, the bound
    # a minute-deep bucket, the mistake: 600 in the first instant
    assert most_in_any_window(greedy_takes(TokenBucket.per_minute(600, burst_s=60.0), 1, 60.0), 1.0) > 600


def test_a_cost_above_capacity_waits_for_a_full_bucket_then_leaves_debt():
    bucket = TokenBucket.per_minute(6000, burst_s=1.0)  # 100 tokens deep, 100/s
    bucket.take(100, 0.0)
    assert bucket.time_until(250, 0.0) == pytest.approx(1.0)  # waits for 100, not 250
    bucket.take(250, 1.0)
    assert bucket.level == pytest.approx(-150)
    assert bucket.time_until(10, 1.0) == pytest.approx(1.6)  # the debt is paid back first


def test_settle_refunds_or_charges_the_difference():
    bucket = TokenBucket.per_minute(6000, burst_s=1.0)
    bucket.take(80, 0.0)
    bucket.settle(estimated=80, actual=50, now=0.0)
    assert bucket.level == pytest.approx(100 - 80 + 30)
    bucket.settle(estimated=10, actual=90, now=0.0)
    assert bucket.level == pytest.approx(50 - 80)
    bucket.settle(estimated=500, actual=0, now=0.0)
    assert bucket.level == bucket.capacity  # a refund never deepens the bucket


def test_pause_empties_the_bucket_and_holds_it_until_the_end():
    bucket = TokenBucket.per_minute(600, burst_s=1.0)
    bucket.pause(until=2.0)
    assert bucket.level_at(1.5) == 0.0  # no refill during the pause
    assert bucket.time_until(1, 1.0) == pytest.approx(1.0 + 0.1)
    bucket.settle(estimated=0, actual=0, now=1.0)  # touching it mid-pause keeps the pause
    assert bucket.time_until(1, 1.0) == pytest.approx(1.1)
    bucket.pause(until=1.5)  # an earlier end never shortens a pause
    assert bucket.time_until(1, 1.0) == pytest.approx(1.1)
    # after the pause the queue restarts at the rate, not with a 10-request burst
    taken = greedy_takes(bucket, 1, until=3.0)
    assert taken[0] == pytest.approx(2.1) and len(taken) == 9


# ---------------------------------------------------------------- the async wrapper


def limiter(clock=None, **overrides) -> Limiter:  # noqa: ANN001
    cfg = JudgeConfig(rpm=60_000, tpm=10_000_000, max_concurrency=3)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return Limiter(cfg.rpm, cfg.tpm, cfg.max_concurrency, cfg.burst_s, clock=clock)


async def test_concurrency_is_capped():
    lim = limiter(max_concurrency=2)
    seen: list[int] = []

    async def call() -> None:
        async with lim.slot(10):
            seen.append(lim.in_flight)
            await asyncio.sleep(0.02)

    await asyncio.gather(*(call() for _ in range(6)))
    assert max(seen) == 2 and lim.in_flight == 0


async def test_both_quotas_are_charged_and_settled():
    lim = limiter(clock=lambda: 50.0)  # a clock that stands still: no refill blurs the charge
    before_requests, before_tokens = lim.requests.level, lim.tokens.level
    async with lim.slot(500) as lease:
        assert (lim.requests.level, lim.tokens.level) == (before_requests - 1, before_tokens - 500)
        lease.settle(300)
        lease.settle(0)  # settling twice is a no-op
    assert lim.requests.level == before_requests - 1
    assert lim.tokens.level == before_tokens - 300


async def test_a_429_pause_holds_every_caller():
    lim = limiter()
    lim.pause(0.2)
    until = lim.requests.updated
    async with lim.slot(1):
        entered = lim.now()
    assert entered >= until  # on the limiter's own clock: the pause is for everyone, this caller too


async def test_waiters_are_served_in_arrival_order():
    lim = limiter(rpm=600, tpm=60_000)  # 10 requests and 1,000 tokens deep
    order: list[int] = []

    async def call(i: int, tokens: int) -> None:
        async with lim.slot(tokens):
            order.append(i)

    # a big request first: later small ones must not starve it by jumping the queue
    tasks = [asyncio.create_task(call(0, 900))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(call(i, 300)) for i in (1, 2, 3)]
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
