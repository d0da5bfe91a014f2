"""Small asyncio helpers shared by the stages."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def finish_then_cancel(work: Awaitable[T]) -> T:
    """Await `work` to its end even if the caller is cancelled meanwhile, then let the
    cancellation through.

    For work that cannot be stopped halfway without breaking an invariant: a thread running on
    the device, or a learner step whose new weights and recorded progress must move together.
    An error of the work itself wins over the cancellation (it says more).
    """
    task = asyncio.ensure_future(work)
    interrupted = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            interrupted = True
    if interrupted and not task.cancelled() and task.exception() is None:
        raise asyncio.CancelledError
    return task.result()
