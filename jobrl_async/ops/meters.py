"""Busy-time meters: how much of the wall time each stage (and the device) spent working."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class BusyMeter:
    """Seconds during which at least one unit of work was active (overlapping work counts once)."""

    def __init__(self, clock=time.perf_counter) -> None:
        self._clock = clock
        self._active = 0
        self._since = 0.0
        self._busy = 0.0

    def enter(self) -> None:
        if self._active == 0:
            self._since = self._clock()
        self._active += 1

    def exit(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._busy += self._clock() - self._since

    @contextmanager
    def busy(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.exit()

    @property
    def busy_s(self) -> float:
        running = self._clock() - self._since if self._active else 0.0
        return self._busy + running


class Window:
    """Fractions of wall time since the last `lap()`, for the per-step log event."""

    def __init__(self, meters: dict[str, BusyMeter], clock=time.perf_counter) -> None:
        self._meters = meters
        self._clock = clock
        self._t0 = clock()
        self._b0 = {k: m.busy_s for k, m in meters.items()}

    def lap(self) -> dict[str, float]:
        now = self._clock()
        wall = max(now - self._t0, 1e-9)
        out = {}
        for name, meter in self._meters.items():
            busy = meter.busy_s
            out[name] = round(min(1.0, (busy - self._b0[name]) / wall), 4)
            self._b0[name] = busy
        self._t0 = now
        return out
