"""Identical offers are judged once: a bounded table of verdicts, in flight or received.

GRPO samples several attempts per context, and a small or converging policy writes the same
offer more than once; each duplicate judged again pays the same tokens for the same answer
(the judge runs at temperature 0). The key is everything the verdict depends on:

    sha256(context (title, language, skills, industry) | offer text | criteria | judge model | calls)

A first caller starts the judgement; a caller with the same key while it is in flight awaits
the same future, and a later one reuses its result. A judgement that fails is forgotten (the
next identical offer pays again: a failure is never cached). At most `max_entries` judgements
received are kept, least recently used first out; one in flight is never evicted (its duplicates
would pay again), so the table may hold more while that many are in flight (bounded by the
judge's concurrency); 0 turns it off. `hits` counts the judgements reused, each once: a waiter
whose first caller failed or was cancelled reused nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import orjson

from ..flow.records import Context

T = TypeVar("T")


def dedup_key(context: Context, offer: str, criteria: Sequence[str], model: str, calls: str) -> str:
    """The identity of one judgement: the same key means the same request to the same judge."""
    blob = orjson.dumps([context.job_title, context.language, list(context.skills), context.industry,
                         offer, list(criteria), model, calls])
    return hashlib.sha256(blob).hexdigest()


class DedupTable:
    """key -> the future of its judgement (pending or done), LRU-bounded."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, asyncio.Future] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get_or_run(self, key: str, judge: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(result, reused): the judgement of `key`, run by the first caller, shared with the others."""
        if self.max_entries <= 0:
            return await judge(), False
        known = self._entries.get(key)
        if known is not None:
            self._entries.move_to_end(key)
            try:
                # shield: a waiter cancelled (its offer dropped) must not cancel the first caller's call
                result = await asyncio.shield(known)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not known.cancelled() or (task is not None and task.cancelling()):
                    raise
                return await self.get_or_run(key, judge)  # the first caller was cancelled, not us
            self.hits += 1
            return result, True
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._entries[key] = future
        self._trim()
        try:
            result = await judge()
        except BaseException as e:
            if self._entries.get(key) is future:
                del self._entries[key]  # never cache a failure
            if future.done():
                pass
            elif isinstance(e, Exception):
                future.set_exception(e)
                future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            else:
                future.cancel()  # the waiters judge it themselves
            raise
        future.set_result(result)
        return result, False

    def _trim(self) -> None:
        """Evict the least recently used judgements received, never one in flight."""
        excess = len(self._entries) - self.max_entries
        if excess <= 0:
            return
        done = [key for key, future in self._entries.items() if future.done()][:excess]
        for key in done:
            del self._entries[key]
