"""The checkpoint lease: one training run per checkpoints URI.

Two runs writing the same prefix would move each other's pointers and delete each other's
folders (retention). So `run` holds `lease.json` under the checkpoints URI:

    {"format": 1, "owner": {"run", "host", "machine", "pid", "started"},
     "acquired": ISO time, "heartbeat": unix time, "timeout_s": 120.0, "released": false}

Every write of it is a compare-and-swap (`Store.write_if`: S3's conditional writes, a lock file
locally), so of two runs racing for it exactly one wins, and a run whose lease was taken over
learns it at its next heartbeat (every `timeout_s / 4`) or before its next checkpoint.

When is a lease someone else's (`assess`, pure)?
    released, or no lease                      free
    owner on this machine, process gone        free at once (kill -9, OOM: the restart goes on)
    owner on this machine, process alive       held: refused at once
    owner elsewhere                            held: we watch it; a renewal means alive (refused),
                                               the record unchanged for its `timeout_s` (at most
                                               MAX_WATCH_S) means expired: taken over (a lost pod)
"This machine" is the same host name, boot and PID namespace, so a pid means the same process;
the process start time tells a reused pid apart. `run --force` takes over a held lease.

Expiry is timed on our own monotonic clock, never by comparing the owner's `heartbeat` (its wall
clock) with ours: hosts' clocks differ (120 s of skew would take a live lease at first sight, a
heartbeat far in the future would never expire). The difference is logged (`clock_skew_s`) when
a renewal is seen.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import orjson

from ..config import Config
from ..errors import CheckpointError, StorageError
from ..ops.log import get_logger
from ..storage import Store, StorageConflict, open_store
from .formats import is_finite_number, utc_now

LEASE_KEY = "lease.json"
MAX_LEASE_BYTES = 64 * 1024
MAX_TEXT = 255  # host names and the like, read back from a lease someone else wrote
MAX_WATCH_S = 3600.0  # a lease.json's own `timeout_s` (anyone could have written it) is trusted up to this

Verdict = Literal["free", "owner_gone", "expired", "held_here", "held_elsewhere"]


class CheckpointLeaseLost(CheckpointError):
    """Another run took the checkpoints over: this one must write nothing more there."""


# ---------------------------------------------------------------- owners and records (pure)


@dataclass(frozen=True)
class Owner:
    run: str  # unique per process: tells two runs apart even with the same pid
    host: str
    machine: str  # boot id + PID namespace: pids compare only when this is equal ("" off Linux)
    pid: int
    started: str  # the process start time, in the kernel's clock ticks ("" when unknown)

    def describe(self) -> str:
        return f"host {printable(self.host)}, pid {self.pid}"


@dataclass(frozen=True)
class LeaseRecord:
    owner: Owner
    heartbeat: float  # unix time of the last renewal
    timeout_s: float  # the owner renews every timeout_s / 4
    acquired: str = ""
    released: bool = False

    def to_bytes(self) -> bytes:
        return orjson.dumps({"format": 1, **asdict(self)})


def printable(text: str, limit: int = 64) -> str:
    """`text` safe to print on a terminal: printable ASCII, at most `limit` characters."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text[:limit])
    return clean + ("..." if len(text) > limit else "")


def parse_record(raw: bytes, where: str) -> LeaseRecord:
    """A lease read back (anyone could have written it), checked field by field."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CheckpointError(f"{where} is not valid JSON") from None
    owner = data.get("owner") if isinstance(data, dict) else None
    if not isinstance(owner, dict):
        raise CheckpointError(f"{where}: no 'owner' object")
    texts = {k: owner.get(k) for k in ("run", "host", "machine", "started")}
    if not all(isinstance(v, str) and len(v) <= MAX_TEXT for v in texts.values()):
        raise CheckpointError(f"{where}: 'owner' needs short strings 'run', 'host', 'machine', 'started'")
    pid, beat, timeout = owner.get("pid"), data.get("heartbeat"), data.get("timeout_s")
    if not (isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**32):
        raise CheckpointError(f"{where}: 'owner.pid' must be a positive integer")
    for name, value in (("heartbeat", beat), ("timeout_s", timeout)):
        if not is_finite_number(value) or value < 0:
            raise CheckpointError(f"{where}: '{name}' must be a number >= 0")
    acquired, released = data.get("acquired", ""), data.get("released", False)
    if not isinstance(acquired, str) or len(acquired) > MAX_TEXT or not isinstance(released, bool):
        raise CheckpointError(f"{where}: 'acquired' must be a short string and 'released' a boolean")
    return LeaseRecord(Owner(pid=pid, **texts), float(beat), float(timeout), acquired, released)


def assess(record: LeaseRecord | None, me: Owner, alive: Callable[[int, str], bool]) -> Verdict:
    """Whose the lease is, seen by `me` (see the module's table); whether a lease held elsewhere
    has expired is for `Sighting` to tell, by watching it."""
    if record is None or record.released or record.owner.run == me.run:
        return "free"
    owner = record.owner
    if (owner.host, owner.machine) == (me.host, me.machine):
        return "held_here" if alive(owner.pid, owner.started) else "owner_gone"
    return "held_elsewhere"


@dataclass(frozen=True)
class Sighting:
    """A lease held elsewhere as first seen: which run, which version of the record, and when on
    our monotonic clock."""

    run: str
    version: tuple[str | None, float]  # the store's tag and the heartbeat: either moves on renewal
    since: float
    watch_s: float  # unchanged this long: expired

    @classmethod
    def of(cls, record: LeaseRecord, tag: str | None, now: float) -> "Sighting":
        return cls(record.owner.run, (tag, record.heartbeat), now, min(record.timeout_s, MAX_WATCH_S))

    def verdict(self, record: LeaseRecord, tag: str | None, now: float) -> Verdict:
        """The same owner seen again at monotonic `now`: renewed (alive), silent or expired."""
        if (tag, record.heartbeat) != self.version:
            return "held_here"  # it renewed while we watched: its owner is alive
        return "expired" if now - self.since >= self.watch_s else "held_elsewhere"

    def remaining_s(self, now: float) -> float:
        return self.since + self.watch_s - now


# ---------------------------------------------------------------- this process (Linux /proc, else a fallback)


def this_process(run: str | None = None) -> Owner:
    pid = os.getpid()
    return Owner(run=run or uuid.uuid4().hex, host=socket.gethostname(), machine=_machine(), pid=pid,
                 started=_start_ticks(pid) or "")


def _machine() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def _start_ticks(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time since boot); None when the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the name, in parentheses, may hold spaces
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def process_alive(pid: int, started: str) -> bool:
    """Whether the process `pid`, started at `started`, still runs on this machine."""
    if Path("/proc/self/stat").exists():
        ticks = _start_ticks(pid)
        return ticks is not None and (not started or ticks == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


# ---------------------------------------------------------------- the lease


class CheckpointLease:
    """The lease of one run on one checkpoints URI: `acquire`, then a heartbeat task renews it
    until `release`. `check()` before anything that moves pointers or deletes folders."""

    def __init__(self, store: Store, timeout_s: float, *, owner: Owner | None = None,
                 clock: Callable[[], float] = time.time, alive: Callable[[int, str], bool] = process_alive,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.uri = store.uri(LEASE_KEY)
        self.timeout_s = timeout_s
        self.owner = owner or this_process()
        self._clock, self._alive, self._monotonic = clock, alive, monotonic
        self._tag: str | None = None
        self._acquired = ""
        self._task: asyncio.Task | None = None
        self.lost: BaseException | None = None
        self.lost_event = asyncio.Event()

    @property
    def interval_s(self) -> float:
        return self.timeout_s / 4

    async def acquire(self, force: bool = False) -> None:
        """Take the lease, or raise CheckpointError (one line: who holds it, what to do)."""
        seen: Sighting | None = None  # a lease held elsewhere, as first seen
        while True:
            record, tag = await self._read()
            verdict = assess(record, self.owner, self._alive)
            if verdict == "held_elsewhere" and not force:
                assert record is not None
                if seen is None or seen.run != record.owner.run:
                    seen = Sighting.of(record, tag, self._monotonic())
                    get_logger("checkpoints").warning(
                        "checkpoint_lease_waiting", uri=self.uri, owner=record.owner.describe(),
                        heartbeat_age_s=round(self._clock() - record.heartbeat, 1), watch_s=seen.watch_s)
                else:
                    verdict = seen.verdict(record, tag, self._monotonic())
                    if verdict == "held_here":  # just renewed: what is left of its age is the clocks' skew
                        get_logger("checkpoints").info("checkpoint_lease_renewed_elsewhere", uri=self.uri,
                                                       clock_skew_s=round(self._clock() - record.heartbeat, 1))
            if verdict == "held_here" and not force:
                assert record is not None
                raise CheckpointError(self._busy(record))
            if verdict == "held_elsewhere" and not force:
                assert seen is not None
                await asyncio.sleep(min(5.0, self.interval_s / 2, max(0.05, seen.remaining_s(self._monotonic()))))
                continue
            if await self._take(tag):
                break
        self._log_taken(record, verdict)
        self._task = asyncio.create_task(self._renew_forever(), name="checkpoint-lease")

    def _log_taken(self, previous: LeaseRecord | None, verdict: Verdict) -> None:
        log = get_logger("checkpoints")
        if verdict == "free":
            log.info("checkpoint_lease_acquired", uri=self.uri, run=self.owner.run, timeout_s=self.timeout_s)
            return
        assert previous is not None  # only a lease that exists is taken over
        reason = "forced" if verdict.startswith("held") else verdict
        holder = "unreadable" if previous is _UNREADABLE else previous.owner.describe()
        log.warning("checkpoint_lease_taken_over", uri=self.uri, run=self.owner.run, reason=reason,
                    previous_owner=holder)

    async def check(self) -> None:
        """Raise CheckpointLeaseLost unless the stored lease is still this run's."""
        if self.lost is not None:
            raise self.lost
        record, _ = await self._read()
        if not self._ours(record):
            raise self._lose(record)

    async def release(self) -> None:
        """Stop renewing and mark the lease released (unless another run holds it now)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.lost is not None or self._tag is None:
            return
        record = replace(self._record(), released=True)
        try:
            await self._write(record)
        except CheckpointLeaseLost:
            return
        except StorageError as exc:  # it expires, or our next start frees it: worth a line, no more
            get_logger("checkpoints").warning("checkpoint_lease_release_failed", uri=self.uri, reason=str(exc))
            return
        self._tag = None
        get_logger("checkpoints").info("checkpoint_lease_released", uri=self.uri, run=self.owner.run)

    async def aclose(self) -> None:
        await self.release()
        await self.store.aclose()

    # -- internals

    def _record(self) -> LeaseRecord:
        return LeaseRecord(self.owner, self._clock(), self.timeout_s, self._acquired)

    async def _read(self) -> tuple[LeaseRecord | None, str | None]:
        got = await self.store.read_tagged(LEASE_KEY, MAX_LEASE_BYTES)
        if got is None:
            return None, None
        raw, tag = got
        try:
            return parse_record(raw, self.uri), tag
        except CheckpointError as exc:
            get_logger("checkpoints").warning("checkpoint_lease_unreadable", uri=self.uri, reason=str(exc))
            return _UNREADABLE, tag

    async def _take(self, tag: str | None) -> bool:
        """Write our lease over the one tagged `tag`; False when another run moved first."""
        self._acquired = utc_now()
        try:
            self._tag = await self.store.write_if(LEASE_KEY, self._record().to_bytes(), tag)
        except StorageConflict:
            return False
        mine, self._tag = await self._read()  # a store that ignores conditions shows it here
        return self._ours(mine)

    def _ours(self, record: LeaseRecord | None) -> bool:
        return record is not None and not record.released and record.owner.run == self.owner.run

    async def _write(self, record: LeaseRecord) -> None:
        """Replace our lease; a conflict means another run took it (CheckpointLeaseLost)."""
        try:
            self._tag = await self.store.write_if(LEASE_KEY, record.to_bytes(), self._tag)
        except StorageConflict:
            current, tag = await self._read()
            if not self._ours(current):
                raise self._lose(current) from None
            # our own earlier write, whose reply was lost (a retried request): adopt it and write again
            self._tag = await self.store.write_if(LEASE_KEY, record.to_bytes(), tag)

    async def _renew_forever(self) -> None:
        log = get_logger("checkpoints")
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self._write(self._record())
            except CheckpointLeaseLost:
                return
            except StorageError as exc:  # the next renewal may get through; the CAS keeps it safe
                log.warning("checkpoint_lease_renew_failed", uri=self.uri, reason=str(exc))
            except Exception as exc:  # a bug: the run must not go on without its lease
                self.lost = exc
                self.lost_event.set()
                raise

    def _lose(self, current: LeaseRecord | None) -> CheckpointLeaseLost:
        if current is None or current is _UNREADABLE or current.released:
            by = "nobody: the lease was removed, released or overwritten"
        else:
            by = current.owner.describe()
        if self.lost is None:
            self.lost = CheckpointLeaseLost(
                f"{self.uri}: another run took the checkpoints over (now held by {by}); "
                "this run stops and writes nothing more there")
            get_logger("checkpoints").error("checkpoint_lease_lost", uri=self.uri, run=self.owner.run, holder=by)
            self.lost_event.set()
        return self.lost  # type: ignore[return-value]

    def _busy(self, record: LeaseRecord) -> str:
        age = max(0.0, self._clock() - record.heartbeat)
        return (f"{self.store.uri()} is in use by another run ({record.owner.describe()}, last heartbeat "
                f"{age:.0f} s ago): stop it, use another --checkpoints, or pass --force to take it over")


# A lease.json that does not parse: nobody can be said to hold it, so it is taken over.
_UNREADABLE = LeaseRecord(Owner("", "", "", 1, ""), 0.0, 0.0)


async def acquire_lease(cfg: Config, *, force: bool = False) -> CheckpointLease:
    """The lease on `cfg.checkpoints.uri`, held and renewed until the checkpoint writer stops."""
    store = open_store(cfg.checkpoints.uri, cfg.storage)
    lease = CheckpointLease(store, cfg.checkpoints.lease_timeout_s)
    try:
        await lease.acquire(force)
    except BaseException:
        await store.aclose()
        raise
    return lease
