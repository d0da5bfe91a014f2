"""The circuit breaker's state machine on its own: a real event loop, a probe every 10 ms."""

from __future__ import annotations

import asyncio

import pytest

from jobrl_async.breaker import Breaker
from jobrl_async.remote.options import RemoteStats
from jobrl_async.remote.rotation import Rotation, RotationBreaker
from tests.test_judge_stage import captured_logs, events  # noqa: F401 (a fixture)

INTERVAL_S = 0.01


class Probe:
    """A probe that answers from a script (True, False or an exception), then True; and the events seen."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.events: list[tuple] = []

    async def __call__(self) -> bool:
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer

    def breaker(self, threshold: int = 3, interval_s: float = INTERVAL_S, **kwargs) -> Breaker:
        return Breaker(self, interval_s, threshold=threshold, name="test-probe",
                       on_open=lambda reason: self.events.append(("open", reason)),
                       on_close=lambda paused_s: self.events.append(("close", paused_s)),
                       on_probe_failed=lambda e: self.events.append(("probe_failed", str(e))),
                       on_stop=lambda e: self.events.append(("stop", str(e))), **kwargs)


async def aclose(breaker: Breaker) -> None:
    await asyncio.wait_for(breaker.aclose(), 1)  # a probe not cancelled would hold it for its interval


def probe_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "test-probe" and not t.done()]


async def test_it_opens_at_the_threshold_not_before() -> None:
    probe = Probe()
    breaker = probe.breaker(threshold=3, interval_s=3600)
    breaker.failed("one")
    breaker.failed("two")
    assert breaker.state == "closed" and not breaker.paused and probe.events == [] and probe_tasks() == []
    await asyncio.wait_for(breaker.wait(), 1)  # closed: returns at once
    breaker.failed("three")
    assert breaker.state == "open" and breaker.paused and probe.events == [("open", "three")]
    assert len(probe_tasks()) == 1
    breaker.failed("four")  # already open: no second probe, no second event
    breaker.open("again")
    assert probe.events == [("open", "three")] and len(probe_tasks()) == 1 and breaker.failures == 4
    waiting = asyncio.create_task(breaker.wait())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # open: callers wait
    waiting.cancel()
    await aclose(breaker)


async def test_a_success_starts_the_count_again() -> None:
    probe = Probe()
    breaker = probe.breaker(threshold=3, interval_s=3600)
    breaker.failed("one")
    breaker.failed("two")
    breaker.succeeded()
    breaker.failed("three")
    breaker.failed("four")
    assert breaker.state == "closed" and breaker.failures == 2
    breaker.failed("five")
    assert breaker.state == "open" and probe.events == [("open", "five")]
    await aclose(breaker)


async def test_the_probe_closes_it_after_failing() -> None:
    probe = Probe(False, RuntimeError("still down"), True)
    breaker = probe.breaker(threshold=1)
    breaker.failed("down")
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(breaker.wait(), 5)  # the waiters go on once the probe answered
    assert asyncio.get_running_loop().time() - started >= 3 * INTERVAL_S * 0.9  # one probe per interval
    assert probe.calls == 3 and breaker.state == "closed" and breaker.failures == 0
    assert [e[0] for e in probe.events] == ["open", "probe_failed", "close"]
    assert probe.events[1] == ("probe_failed", "still down") and probe.events[2][1] >= 3 * INTERVAL_S * 0.9
    await asyncio.sleep(0)
    assert probe_tasks() == []  # the probe ended with the breaker closed
    breaker.failed("down again")  # and it opens again, with a new probe
    assert breaker.state == "open" and len(probe_tasks()) == 1
    await aclose(breaker)


async def test_a_success_in_flight_closes_it_and_cancels_the_probe() -> None:
    probe = Probe()
    breaker = probe.breaker(threshold=1, interval_s=3600)
    breaker.failed("down")
    (task,) = probe_tasks()
    waiting = asyncio.create_task(breaker.wait())
    await asyncio.sleep(0)
    breaker.succeeded()  # a call sent before the breaker opened got through
    await asyncio.wait_for(waiting, 1)
    await asyncio.sleep(0)
    assert task.cancelled() and probe.calls == 0
    assert breaker.state == "closed" and [e[0] for e in probe.events] == ["open", "close"]


async def test_a_fatal_probe_error_stops_it_for_good() -> None:
    probe = Probe(RuntimeError("try again"), PermissionError("key rotated"))
    breaker = probe.breaker(threshold=1, fatal=lambda e: isinstance(e, PermissionError))
    breaker.failed("down")
    waiters = [asyncio.create_task(breaker.wait()) for _ in range(2)]
    for waiter in waiters:
        with pytest.raises(PermissionError, match="key rotated"):
            await asyncio.wait_for(waiter, 5)
    assert probe.events[1:] == [("probe_failed", "try again"), ("probe_failed", "key rotated"),
                                ("stop", "key rotated")]
    with pytest.raises(PermissionError):  # every later caller too
        await asyncio.wait_for(breaker.wait(), 1)
    await asyncio.sleep(5 * INTERVAL_S)
    assert probe.calls == 2 and probe_tasks() == []  # nothing probed after the stop
    breaker.failed("again")  # stopped for good: it neither opens nor closes
    breaker.succeeded()
    breaker.stop(RuntimeError("another"))
    assert breaker.state == "stopped" and breaker.paused and len(probe.events) == 4
    assert isinstance(breaker.error, PermissionError)


async def test_a_stop_while_probing_cancels_the_probe() -> None:
    probe = Probe()
    breaker = probe.breaker(threshold=1, interval_s=3600)
    breaker.failed("down")
    (task,) = probe_tasks()
    breaker.stop(PermissionError("refused"))  # the caller's own verdict (a call met a refused key)
    await asyncio.sleep(0)
    assert task.cancelled() and probe.events == [("open", "down"), ("stop", "refused")]
    with pytest.raises(PermissionError):
        await asyncio.wait_for(breaker.wait(), 1)


async def test_aclose_cancels_the_probe() -> None:
    probe = Probe()
    breaker = probe.breaker(threshold=1)
    breaker.failed("down")
    (task,) = probe_tasks()
    await aclose(breaker)
    assert task.cancelled() and probe.calls == 0
    await asyncio.sleep(5 * INTERVAL_S)
    assert probe.calls == 0 and probe.events == [("open", "down")]
    await aclose(breaker)  # twice is fine


class HangingProbe(Probe):
    """A probe that waits on a call the test releases: the breaker acts while it is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    async def __call__(self) -> bool:
        self.calls += 1
        self.entered.set()
        await self.release.wait()
        return True


@pytest.mark.parametrize("verdict", ["succeeded", "stop"])
async def test_a_probe_in_flight_is_cancelled_by_a_success_or_a_stop(verdict: str) -> None:
    probe = HangingProbe()
    breaker = probe.breaker(threshold=1)
    breaker.failed("down")
    (task,) = probe_tasks()
    await asyncio.wait_for(probe.entered.wait(), 1)  # the probe is awaiting its answer
    if verdict == "succeeded":
        breaker.succeeded()
    else:
        breaker.stop(PermissionError("refused"))
    await asyncio.sleep(0)
    assert task.cancelled() and probe.calls == 1
    probe.release.set()  # its answer, had it come, changes nothing now
    await asyncio.sleep(5 * INTERVAL_S)
    expected = "closed" if verdict == "succeeded" else "stopped"
    assert breaker.state == expected and probe.calls == 1 and probe_tasks() == []
    assert [e[0] for e in probe.events] == ["open", "close" if verdict == "succeeded" else "stop"]


async def test_a_stopped_breaker_stays_stopped_whatever_a_late_probe_answers() -> None:
    class Stubborn(HangingProbe):
        async def __call__(self) -> bool:  # swallows its cancellation and answers anyway
            self.calls += 1
            self.entered.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                pass
            return True

    probe = Stubborn()
    breaker = probe.breaker(threshold=1)
    breaker.failed("down")
    await asyncio.wait_for(probe.entered.wait(), 1)
    breaker.stop(PermissionError("refused"))
    await asyncio.sleep(5 * INTERVAL_S)
    assert breaker.state == "stopped" and [e[0] for e in probe.events] == ["open", "stop"]
    with pytest.raises(PermissionError):
        await asyncio.wait_for(breaker.wait(), 1)


async def test_the_vllm_rotation_says_a_bug_in_its_probe_round_and_keeps_probing(captured_logs) -> None:
    stream = captured_logs
    scrubs = []

    def scrub(text: str) -> str:  # the first round's scrub is the bug
        scrubs.append(text)
        if len(scrubs) == 2:
            raise RuntimeError("a bug in the round")
        return text

    answers = [ConnectionError("still down")]

    async def probe(url: str) -> None:
        if answers:
            raise answers.pop(0)

    rotation = Rotation(["http://a:8000"], max_failures=1)
    breaker = RotationBreaker(rotation, probe, INTERVAL_S, RemoteStats(), scrub)
    breaker.take_out("http://a:8000", "refused")
    await asyncio.wait_for(breaker.wait_serving(), 5)  # the round after the bug brought it back
    await breaker.aclose()
    seen = [(e["event"], e["level"]) for e in events(stream)]
    assert seen == [("generator_paused", "warning"), ("generator_probe_failed", "error"),
                    ("generator_resumed", "info")]
    crashed = events(stream)[1]
    assert crashed["reason"] == "RuntimeError: a bug in the round" and "exception" in crashed
