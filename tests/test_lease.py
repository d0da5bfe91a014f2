"""The checkpoint lease: one run per checkpoints URI, on a path, file:// and s3:// (moto's server).

Runs are told apart by real processes (this one, a SIGKILLed child) and, for "another host",
by an Owner whose host and machine are not ours.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import anyio
import orjson
import pytest
from structlog.testing import capture_logs

from jobrl_async.checkpoints import CheckpointWriter
from jobrl_async.config import Config
from jobrl_async.errors import CheckpointError
from jobrl_async.checkpoints.lease import (
    LEASE_KEY,
    MAX_WATCH_S,
    CheckpointLease,
    CheckpointLeaseLost,
    LeaseRecord,
    Owner,
    Sighting,
    assess,
    parse_record,
    process_alive,
    this_process,
)
from jobrl_async.storage import open_store

from .test_checkpoints import folder_names, pointer, request, until

ME = Owner("run-me", "host-a", "boot-1/pid:[4026531836]", 100, "5000")


def other(**changes: object) -> Owner:
    fields = {"run": "run-other", "host": "host-a", "machine": "boot-1/pid:[4026531836]", "pid": 200, "started": "6000"}
    return Owner(**(fields | changes))  # type: ignore[arg-type]


def elsewhere(run: str = "run-far") -> Owner:
    return Owner(run, "host-b", "boot-9/pid:[4026531836]", 4242, "1")


def events(logs: list[dict], name: str) -> list[dict]:
    return [e for e in logs if e["event"] == name]


@asynccontextmanager
async def lease(root_uri: str, timeout_s: float = 120.0, owner: Owner | None = None) -> AsyncIterator[CheckpointLease]:
    """A lease object on its own store (as another run would have); released on the way out."""
    held = CheckpointLease(open_store(root_uri), timeout_s, owner=owner)
    try:
        yield held
    finally:
        await held.aclose()


# ---------------------------------------------------------------- whose is it (pure)


@pytest.mark.parametrize(
    ("record", "alive", "verdict"),
    [
        (None, True, "free"),
        (LeaseRecord(other(), 1000.0, 120.0, released=True), True, "free"),
        (LeaseRecord(other(), 1000.0, 120.0), True, "held_here"),  # alive here: no expiry
        (LeaseRecord(other(), 1000.0, 120.0), False, "owner_gone"),  # kill -9, OOM: at once
        (LeaseRecord(other(machine="boot-2/pid:[4026531836]"), 1000.0, 120.0), False, "held_elsewhere"),
        (LeaseRecord(other(machine="boot-1/pid:[4026532000]"), 1000.0, 120.0), False, "held_elsewhere"),
        # elsewhere, whatever its heartbeat says (clocks differ): watched before it can expire
        (LeaseRecord(elsewhere(), 0.0, 120.0), True, "held_elsewhere"),
        (LeaseRecord(elsewhere(), 1e12, 120.0), True, "held_elsewhere"),
    ],
)
def test_assess(record: LeaseRecord | None, alive: bool, verdict: str) -> None:
    assert assess(record, ME, lambda pid, started: alive) == verdict


def test_a_sighting_expires_on_our_own_clock_only() -> None:
    record = LeaseRecord(elsewhere(), 1e12, 120.0)  # a heartbeat far in the owner's "future"
    seen = Sighting.of(record, "tag-1", now=50.0)
    assert seen.verdict(record, "tag-1", now=169.0) == "held_elsewhere"
    assert seen.verdict(record, "tag-1", now=170.0) == "expired"  # unchanged for 120 s of OUR time
    assert seen.verdict(record, "tag-2", now=60.0) == "held_here"  # renewed: alive
    assert seen.verdict(replace(record, heartbeat=1e12 + 30), "tag-1", now=60.0) == "held_here"
    assert Sighting.of(LeaseRecord(elsewhere(), 0.0, 1e12), None, 0.0).watch_s == MAX_WATCH_S


def test_process_alive_tells_a_reused_pid_apart() -> None:
    me = this_process()
    assert process_alive(me.pid, me.started)
    if me.started:  # Linux: the start time is known
        assert not process_alive(me.pid, str(int(me.started) + 1))  # same pid, another process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_alive(child.pid, "")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "'owner'"),
        (orjson.dumps({"owner": {"run": "r", "host": "h" * 300, "machine": "", "started": "", "pid": 1},
                       "heartbeat": 1.0, "timeout_s": 1.0}), "short strings"),
        (orjson.dumps({"owner": {"run": "r", "host": "h", "machine": "", "started": "", "pid": True},
                       "heartbeat": 1.0, "timeout_s": 1.0}), "pid"),
        (orjson.dumps({"owner": {"run": "r", "host": "h", "machine": "", "started": "", "pid": 1},
                       "heartbeat": -1.0, "timeout_s": 1.0}), "'heartbeat'"),
    ],
)
def test_a_lease_read_back_is_checked(raw: bytes, reason: str) -> None:
    with pytest.raises(CheckpointError, match=reason):
        parse_record(raw, "s3://b/ckpt/lease.json")


def test_a_record_round_trips() -> None:
    record = LeaseRecord(elsewhere(), 1234.5, 120.0, "2026-01-01T00:00:00+00:00")
    assert parse_record(record.to_bytes(), "lease.json") == record


# ---------------------------------------------------------------- two runs, one URI


async def test_a_second_run_is_refused_in_one_line_and_force_takes_over(root_uri: str) -> None:
    async with lease(root_uri) as first, lease(root_uri) as second, lease(root_uri) as third:
        with capture_logs() as logs:
            await first.acquire()
        (acquired,) = events(logs, "checkpoint_lease_acquired")
        assert acquired["uri"].endswith(LEASE_KEY) and acquired["run"] == first.owner.run

        with pytest.raises(CheckpointError) as err:  # same machine, owner alive: no waiting
            await second.acquire()
        line = str(err.value)
        assert "\n" not in line and "is in use by another run" in line and f"pid {os.getpid()}" in line
        assert "--force" in line and line.startswith("checkpoint: ")
        await first.check()  # refusing changed nothing

        with capture_logs() as logs:
            await second.acquire(force=True)
        (taken,) = events(logs, "checkpoint_lease_taken_over")
        assert taken["reason"] == "forced" and taken["previous_owner"] == first.owner.describe()
        with pytest.raises(CheckpointLeaseLost, match="another run took the checkpoints over"):
            await first.check()
        await first.release()  # the loser's release leaves the winner's lease alone
        await second.check()

        await second.release()
        with capture_logs() as logs:
            await third.acquire()  # a released lease is free
        assert events(logs, "checkpoint_lease_acquired") and not events(logs, "checkpoint_lease_taken_over")


HOLD = """
import asyncio, sys
from jobrl_async.checkpoints.lease import CheckpointLease
from jobrl_async.storage import open_store

async def main():
    await CheckpointLease(open_store(sys.argv[1]), 120.0).acquire()
    print("held", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_owner_on_this_machine_frees_the_lease_at_once(root_uri: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, root_uri], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = b"log"
        while line not in (b"held\n", b""):  # its log lines come first
            line = await asyncio.to_thread(proc.stdout.readline)
        assert line == b"held\n"
        async with lease(root_uri) as mine:
            with pytest.raises(CheckpointError, match=f"pid {proc.pid}"):
                await mine.acquire()  # alive: refused
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            with capture_logs() as logs:
                await mine.acquire()  # dead: taken over without waiting for any timeout
            (taken,) = events(logs, "checkpoint_lease_taken_over")
            assert taken["reason"] == "owner_gone" and f"pid {proc.pid}" in taken["previous_owner"]
            assert not events(logs, "checkpoint_lease_waiting")
            await mine.check()
    finally:
        proc.kill()
        proc.wait()


async def write_record(root_uri: str, record: LeaseRecord) -> None:
    async with open_store(root_uri) as store:
        await store.write_bytes(LEASE_KEY, record.to_bytes())


async def test_a_lease_from_another_host_expires_after_its_timeout_on_our_clock(root_uri: str) -> None:
    # its heartbeat is old by our clock, but clocks differ: it expires only once seen unchanged
    await write_record(root_uri, LeaseRecord(elsewhere(), time.time() - 200.0, 1.0))
    async with lease(root_uri) as mine:
        started = time.monotonic()
        with capture_logs() as logs:
            await mine.acquire()
    assert time.monotonic() - started >= 1.0
    (taken,) = events(logs, "checkpoint_lease_taken_over")
    assert taken["reason"] == "expired" and "host host-b" in taken["previous_owner"]
    (waiting,) = events(logs, "checkpoint_lease_waiting")
    assert waiting["heartbeat_age_s"] >= 200.0 and waiting["watch_s"] == 1.0


async def test_a_heartbeat_from_the_far_future_does_not_wedge_the_prefix(root_uri: str) -> None:
    await write_record(root_uri, LeaseRecord(elsewhere(), 1e12, 1.0))  # a dead owner's broken clock
    async with lease(root_uri) as mine:
        with anyio.fail_after(30), capture_logs() as logs:
            await mine.acquire()
    assert events(logs, "checkpoint_lease_taken_over")[0]["reason"] == "expired"


async def test_a_live_run_on_a_host_whose_clock_lags_is_not_taken_over(root_uri: str) -> None:
    # the owner's clock is 200 s behind ours: by wall clocks its lease looks long expired
    lagging = CheckpointLease(open_store(root_uri), 3.0, owner=elsewhere(), clock=lambda: time.time() - 200.0)
    try:
        await lagging.acquire()  # renews every 0.75 s from now on
        async with lease(root_uri, timeout_s=3.0) as mine:
            with capture_logs() as logs, pytest.raises(CheckpointError, match="in use by another run"):
                await mine.acquire()
        (renewed,) = events(logs, "checkpoint_lease_renewed_elsewhere")
        assert 195.0 <= renewed["clock_skew_s"] <= 205.0  # the skew, logged
        await lagging.check()  # still its lease
    finally:
        await lagging.aclose()


async def test_a_silent_lease_from_another_host_is_taken_once_it_expires(root_uri: str) -> None:
    # a pod that just died; 3 s, so a loaded machine reads it back before it expires
    await write_record(root_uri, LeaseRecord(elsewhere(), time.time(), 3.0))
    async with lease(root_uri, timeout_s=1.0) as mine:
        with capture_logs() as logs:
            await mine.acquire()
    assert [e["event"] for e in logs if e["event"].startswith("checkpoint_lease")] == [
        "checkpoint_lease_waiting", "checkpoint_lease_taken_over",
    ]
    assert events(logs, "checkpoint_lease_taken_over")[0]["reason"] == "expired"


async def test_a_live_run_on_another_host_is_refused_once_it_renews(root_uri: str) -> None:
    # a timeout a loaded machine's S3 server cannot outlast between two renewals (it watches that long)
    async with lease(root_uri, timeout_s=3.0, owner=elsewhere()) as far, lease(root_uri, timeout_s=3.0) as mine:
        await far.acquire()  # renews every 0.75 s from now on
        with capture_logs() as logs, pytest.raises(CheckpointError, match="in use by another run .host host-b"):
            await mine.acquire()
        assert events(logs, "checkpoint_lease_waiting")  # it watched before deciding
        await far.check()


async def test_an_unreadable_lease_is_taken_over(root_uri: str) -> None:
    async with open_store(root_uri) as store:
        await store.write_bytes(LEASE_KEY, b"not json")
    async with lease(root_uri) as mine:
        with capture_logs() as logs:
            await mine.acquire()
        await mine.check()
    assert events(logs, "checkpoint_lease_unreadable")
    assert events(logs, "checkpoint_lease_taken_over")[0]["previous_owner"] == "unreadable"


# ---------------------------------------------------------------- the writer under a lease


def cfg_for(max_attempts: int = 8) -> Config:
    cfg = Config()
    cfg.checkpoints.max_attempts = max_attempts
    return cfg


async def crashed(task: asyncio.Task, limit_s: float = 30.0) -> BaseException:
    """The exception `task` ends with (the bound only keeps a broken test from hanging)."""
    with anyio.fail_after(limit_s):
        await asyncio.wait({task})
    exc = task.exception()
    assert exc is not None, "the writer kept running"
    return exc


async def test_a_writer_whose_lease_was_taken_moves_no_pointer_and_stops(root_uri: str) -> None:
    ours = CheckpointLease(open_store(root_uri), 120.0)  # renews every 30 s: the check finds it first
    await ours.acquire()
    writer = CheckpointWriter(root_uri, cfg_for(), lease=ours)
    task = asyncio.create_task(writer.run())
    writer.submit(request("latest", 1))
    await until(lambda: writer.stats.written == 1)
    async with lease(root_uri) as theirs:
        await theirs.acquire(force=True)
        writer.submit(request("latest", 2))
        exc = await crashed(task)
        assert isinstance(exc, CheckpointLeaseLost)
        await theirs.check()  # the loser did not release the winner's lease
    assert (await pointer(root_uri, "latest"))["path"] == "step-000001"
    assert await folder_names(root_uri) == ["step-000001"]  # nothing of step 2 was written


async def test_an_idle_writer_notices_the_takeover_at_its_next_heartbeat(root_uri: str) -> None:
    ours = CheckpointLease(open_store(root_uri), 0.4)  # renews every 0.1 s
    await ours.acquire()
    writer = CheckpointWriter(root_uri, cfg_for(), lease=ours)
    task = asyncio.create_task(writer.run())
    async with lease(root_uri) as theirs:
        with capture_logs() as logs:
            await theirs.acquire(force=True)
            exc = await crashed(task)
    assert isinstance(exc, CheckpointLeaseLost) and "\n" not in str(exc)
    (lost,) = events(logs, "checkpoint_lease_lost")
    assert lost["run"] == ours.owner.run and str(os.getpid()) in lost["holder"]


async def test_the_writer_releases_its_lease_when_it_stops(root_uri: str) -> None:
    ours = CheckpointLease(open_store(root_uri), 120.0)
    await ours.acquire()
    writer = CheckpointWriter(root_uri, cfg_for(), lease=ours)
    task = asyncio.create_task(writer.run())
    writer.submit(request("latest", 1))
    await until(lambda: writer.stats.written == 1)
    assert await writer.close(60.0)
    await task
    async with open_store(root_uri) as store:
        record = parse_record(await store.read_bytes(LEASE_KEY), LEASE_KEY)
    assert record.released and record.owner == ours.owner
    async with lease(root_uri) as next_run:
        with capture_logs() as logs:
            await next_run.acquire()
    assert events(logs, "checkpoint_lease_acquired")


async def test_a_run_that_fails_to_start_after_taking_the_lease_releases_it(tmp_path) -> None:
    from jobrl_async.pipeline import build
    from jobrl_async.config import load_config
    from jobrl_async.errors import ModelError

    root = str(tmp_path / "ckpt")
    cfg = load_config(env={}, overrides={"judge.mode": "stub", "checkpoints.uri": root,
                                         "model.name": str(tmp_path / "no-such-model")})
    with pytest.raises(ModelError):
        await build(cfg, tmp_path / "work")
    async with open_store(root) as store:
        record = parse_record(await store.read_bytes(LEASE_KEY), LEASE_KEY)
    assert record.released
