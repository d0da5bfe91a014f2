"""The device lock: one heavy job at a time, and never a job left running after a cancel."""

from __future__ import annotations

import asyncio
import threading
import time

from jobrl_async.policy.device import Device, device_user


async def test_jobs_never_overlap_and_busy_time_is_attributed() -> None:
    device = Device("cpu")
    running, overlaps = [0], [0]
    lock = threading.Lock()

    def work() -> None:
        with lock:
            running[0] += 1
            overlaps[0] = max(overlaps[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    async def as_user(name: str) -> None:
        device_user.set(name)
        await device.run(work)

    await asyncio.gather(as_user("generator"), as_user("learner"), as_user("generator"))
    assert overlaps[0] == 1
    assert device.busy_by["generator"] >= 0.09 and device.busy_by["learner"] >= 0.04
    assert device.jobs == 3


async def test_a_cancelled_caller_holds_the_device_until_its_thread_is_done() -> None:
    device = Device("cpu")
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.3)
        finished.set()

    task = asyncio.create_task(device.run(slow))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.01)
    task.cancel()  # a second cancel must not let go either
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert finished.is_set()  # the cancellation waited for the thread
    assert not device.locked  # and then released the device
