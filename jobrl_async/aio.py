"""Small asyncio helpers shared by the stages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

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


def leaf_errors(group: BaseExceptionGroup) -> list[BaseException]:
    """The errors inside a (nested) exception group, in order, cancellations left out."""
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            leaves += leaf_errors(exc)
        elif not isinstance(exc, asyncio.CancelledError):
            leaves.append(exc)
    return leaves


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine on uvloop (where it is installed), the one event loop of every command."""
    try:
        import uvloop
    except ImportError:  # Windows: uvloop does not exist there
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def run_ahead(produce: Callable[[Callable[[T], None]], Awaitable[None]]) -> AsyncGenerator[T, None]:
    """Run `produce(emit)` in its own task and yield what it emits, as it emits it.

    Consume it under `contextlib.aclosing` wherever the loop's body awaits: a consumer cancelled
    there leaves the generator suspended, and only its `aclose` (else the garbage collector,
    some time later) stops the producer, which may hold a lock (the policy lock of a validation
    round) until then.

    The producer never waits for the consumer (what is not taken yet is buffered: its bound is
    the producer's own work), so a consumer blocked by backpressure downstream never holds up,
    say, a generation job that holds a lock; the producer's error comes after what it emitted.
    `emit` is called on the event loop (from a worker thread: `loop.call_soon_threadsafe`).
    """
    buffer: asyncio.Queue = asyncio.Queue()
    done = object()

    async def body() -> None:
        try:
            await produce(buffer.put_nowait)
        finally:
            buffer.put_nowait(done)

    task = asyncio.create_task(body())
    try:
        while (item := await buffer.get()) is not done:
            yield item
        await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
