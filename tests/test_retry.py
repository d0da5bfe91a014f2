"""The shared retry policy (jobrl_async/retry.py): backoff, the server's Retry-After, what is retried."""

from __future__ import annotations

import pytest

from jobrl_async.retry import RETRY_AFTER_CAP_S, retryable_status, retrying


class Busy(Exception):
    def __init__(self, asked: float | None = None) -> None:
        super().__init__(f"busy, come back in {asked}")
        self.asked = asked


class Script:
    """A call that raises its scripted errors in turn, then answers; the retries' waits, recorded."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.slept: list[float] = []
        self.retried: list[tuple[int, float, str]] = []

    async def call(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "answer"

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def on_retry(self, attempt: int, wait: float, error: BaseException | None) -> None:
        self.retried.append((attempt, wait, str(error)))

    def retrying(self, attempts: int = 4, max_s: float = 0.2) -> object:
        return retrying(attempts=attempts, first_s=0.1, max_s=max_s, retry_if=lambda e: isinstance(e, Busy),
                        asked=lambda e: e.asked if isinstance(e, Busy) else None,
                        on_retry=self.on_retry, sleep=self.sleep)


async def test_a_retry_waits_at_least_what_the_server_asked_up_to_the_cap() -> None:
    script = Script(Busy(asked=2.5), Busy(asked=1e9), Busy())
    assert await script.retrying()(script.call) == "answer"
    assert script.calls == 4
    assert script.slept[:2] == [2.5, RETRY_AFTER_CAP_S]
    assert 0 <= script.slept[2] <= 0.2  # nothing asked: our jittered backoff, within its bound
    assert [(a, w) for a, w, _ in script.retried] == list(zip([1, 2, 3], script.slept))


async def test_the_last_error_is_raised_once_the_attempts_are_spent() -> None:
    script = Script(*(Busy(asked=0.0) for _ in range(5)))
    with pytest.raises(Busy):
        await script.retrying(attempts=3)(script.call)
    assert script.calls == 3 and len(script.retried) == 2


async def test_an_error_the_caller_does_not_retry_is_raised_at_once() -> None:
    script = Script(ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await script.retrying()(script.call)
    assert script.calls == 1 and script.slept == [] and script.retried == []


@pytest.mark.parametrize(("status", "retryable"), [(408, True), (409, True), (429, True), (500, True), (503, True),
                                                   (400, False), (401, False), (404, False), (422, False)])
def test_retryable_statuses(status: int, retryable: bool) -> None:
    assert retryable_status(status) is retryable
