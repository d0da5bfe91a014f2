"""Retrying HTTP calls: which statuses are worth another try, and how long to wait before it.

One policy for every HTTP client of ours (the judge, the remote generator): exponential backoff
with full jitter, `first_s` then doubling up to `max_s`, but never less than what the server
asked for (`retry-after-ms`, else `Retry-After`), itself capped at `RETRY_AFTER_CAP_S`:

    wait(k) = max(U(0, min(max_s, first_s * 2^k)), min(asked, RETRY_AFTER_CAP_S))

What is retryable, and what a retry counts or logs, stays the caller's: `retrying` takes both.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Awaitable, Callable, Mapping

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every 5xx
RETRY_AFTER_CAP_S = 300.0  # a server asking for longer is broken; do not sleep for a day

# (attempt number, seconds about to be waited, the error that failed it)
OnRetry = Callable[[int, float, BaseException | None], None]


def retryable_status(status: int) -> bool:
    """A status a later try may not get: a timeout, a conflict, a rate limit, a server error."""
    return status in RETRYABLE_STATUS or status >= 500


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """What the server asked us to wait: `retry-after-ms`, else `Retry-After` (seconds or a date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_wait(backoff: float, asked: float | None) -> float:
    """The wait before a retry: our jittered backoff, but never less than what the server asked."""
    return max(backoff, min(asked or 0.0, RETRY_AFTER_CAP_S))


def retrying(
    *,
    attempts: int,
    first_s: float,
    max_s: float,
    retry_if: Callable[[BaseException], bool],
    asked: Callable[[BaseException], float | None],
    on_retry: OnRetry,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncRetrying:
    """At most `attempts` calls; an error `retry_if` accepts is retried after `retry_wait`, an
    error it refuses (and the last one) is raised as it is. `asked(error)`: the wait the server
    asked for with that error, if any; `on_retry` is called before each wait (`sleep`)."""
    backoff = wait_random_exponential(multiplier=first_s, max=max_s)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return retry_wait(backoff(state), asked(error) if error is not None else None)

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        on_retry(state.attempt_number, state.next_action.sleep if state.next_action else 0.0, error)

    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait,
        retry=retry_if_exception(retry_if),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
