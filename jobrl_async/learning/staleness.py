"""The staleness gate: how far generation may run ahead of the learner.

Invariant, with `s` training steps released to the generator and `l` steps the learner has
finished (learned or skipped):

    s - l <= max_policy_lag + 1

so at most (max_policy_lag + 1) x batch training trajectories are in flight or waiting, and
a trajectory is at most `max_policy_lag` optimizer steps old when the learner uses it.
"""

from __future__ import annotations

import asyncio


class StalenessGate:
    def __init__(self, max_policy_lag: int) -> None:
        if max_policy_lag < 0:
            raise ValueError("max_policy_lag must be >= 0")
        self.capacity = max_policy_lag + 1
        self.released = 0  # steps handed to the generator
        self.finished = 0  # steps the learner is done with
        self._changed = asyncio.Condition()

    @property
    def in_flight(self) -> int:
        return self.released - self.finished

    async def acquire(self) -> None:
        """Producer: wait until one more step may start."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.capacity)
            self.released += 1

    async def finish(self) -> None:
        """Learner: a step was learned or skipped; the producer may start another."""
        async with self._changed:
            if self.finished >= self.released:
                raise RuntimeError("finish() without a released step")
            self.finished += 1
            self._changed.notify_all()
