"""The one device: torch threading set deliberately, and a lock that serialises GPU/CPU-heavy work.

Generation and learner steps run in a worker thread (the event loop keeps serving judge and S3
I/O), one at a time. `Device.run` is the only way heavy work reaches the device, so it is also
where the device's busy time is measured.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import time
from collections import defaultdict
from typing import Any, Callable, TypeVar

import anyio.to_thread

from ..aio import finish_then_cancel
from ..config import ModelConfig

T = TypeVar("T")

# Who is using the device (set once per stage task), so busy time is attributed to a stage
# rather than counting the time a stage spent waiting for the lock.
device_user: contextvars.ContextVar[str] = contextvars.ContextVar("device_user", default="other")


def configure_threads(cfg: ModelConfig) -> None:
    """Set torch's threads and OpenMP's wait policy before heavy work starts.

    On a small CPU box OpenMP threads busy-wait and fight the event loop for cores; one thread
    with a passive wait policy was both faster and steadier here (see DESIGN.md, "Lessons").
    OMP_WAIT_POLICY only takes effect if set before torch initialises OpenMP.
    """
    if cfg.omp_wait_policy != "unset":
        os.environ.setdefault("OMP_WAIT_POLICY", cfg.omp_wait_policy)
    import torch

    if cfg.torch_threads > 0 and torch.get_num_threads() != cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)


def resolve_device(name: str) -> str:
    """'auto' -> cuda if available, else mps, else cpu."""
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class Device:
    """Runs heavy work in a worker thread, one job at a time, and counts busy seconds.

    The thread is never abandoned: if the awaiting task is cancelled, it still waits for the
    work to finish before releasing the lock, so two jobs never share the device.
    """

    def __init__(self, name: str = "cpu") -> None:
        self.name = name
        self._lock = asyncio.Lock()
        self.busy_s = 0.0
        self.busy_by: dict[str, float] = defaultdict(float)  # device_user -> seconds
        self.jobs = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            start = time.perf_counter()
            try:
                # A thread cannot be stopped: a cancelled caller holds the device until it is done.
                return await finish_then_cancel(anyio.to_thread.run_sync(fn, *args))
            finally:
                elapsed = time.perf_counter() - start
                self.busy_s += elapsed
                self.busy_by[device_user.get()] += elapsed
                self.jobs += 1

    @property
    def locked(self) -> bool:
        return self._lock.locked()
