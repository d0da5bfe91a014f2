"""The run keeps `report.html` fresh under its checkpoints URI, from its own log events.

A log listener hands the keeper each event exactly as the log holds it (after redaction); it
keeps those the report reads (bounded). Every `report.every_steps` steps it renders the page in a
worker thread and writes it through the checkpoint store, in the background: training never
waits for it. One refresh runs at a time; steps that fall due meanwhile make one more refresh
right after it. A failed render or write is one warning (`report_failed`), never the run's end.
At the end of the run (after `run_summary`, which stays the run's last event: this write logs
only a failure) the page is written once more.

Beside the page, `report-events.jsonl` holds the events it was drawn from. A resumed run (it
logs `resumed`) reads that file back once, bounded and parsed like any log, and draws the
earlier runs' events before its own: the page covers the whole run across restarts. A fresh run
(`--no-resume`) starts its history anew.

Both stay bounded however long the run (`bounded`): at most MAX_STEPS `step` events, the whole
curve from step 1 (the newest half at full resolution, the older steps evenly thinned), and the
newest MAX_OTHER other events; `run_started` and `resumed` are always kept.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import orjson

from ..config import Config
from ..ops.log import add_listener, get_logger, redact, remove_listener
from ..storage import Store, open_store
from .page import render_html
from .runlog import READ, build_run_log, parse_events

REPORT_KEY = "report.html"
HISTORY_KEY = "report-events.jsonl"
MAX_STEPS = 4_000  # `step` events drawn and carried over a resume (~1.5 kB each): the whole curve, thinned
MAX_OTHER = 2_000  # other events kept (checkpoints, pauses, summaries): the newest
MAX_HISTORY_BYTES = 64 << 20  # a larger history file read back is refused (this run's events only)
FINAL_WRITE_TIMEOUT_S = 60.0  # the last write may wait this long for a slow store at shutdown
ONCE = frozenset({"run_started", "resumed"})  # few and needed whatever the run's length: kept apart

log = get_logger("report")


def report_uri(cfg: Config) -> str | None:
    """Where the run keeps its report.html (None when `report.every_steps` is 0), for the logs."""
    if cfg.report.every_steps == 0:
        return None
    return redact(f"{cfg.checkpoints.uri.rstrip('/')}/{REPORT_KEY}")


class ReportKeeper:
    def __init__(self, every_steps: int, store: Callable[[], Store], where: str,
                 title: str = "jobrl-async run report", max_steps: int = MAX_STEPS,
                 max_other: int = MAX_OTHER) -> None:
        assert every_steps >= 1
        self.every_steps = every_steps
        self.where = where  # for the log lines: the page's URI
        self.title = title
        self.written = 0  # pages written
        self._store = store
        self._max_steps, self._max_other = max_steps, max_other
        self._once: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._earlier: list[dict[str, Any]] | None = None  # earlier runs' events, once read back
        self._lock = threading.Lock()  # events may be logged from worker threads
        self._steps = 0
        self._started = False
        self._resumed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._due = False

    @classmethod
    def for_run(cls, cfg: Config) -> "ReportKeeper | None":
        """The keeper of a run's report, or None when `report.every_steps` is 0."""
        if cfg.report.every_steps == 0:
            return None
        uri, storage = cfg.checkpoints.uri, cfg.storage
        return cls(cfg.report.every_steps, lambda: open_store(uri, storage), report_uri(cfg),
                   title=f"jobrl-async run report: {redact(uri)}")

    def start(self) -> None:
        """Listen to the log; from the event loop that will run the refreshes."""
        self._loop = asyncio.get_running_loop()
        add_listener(self.on_event)

    def on_event(self, event: dict[str, Any]) -> None:
        """The log listener: keep what the report reads; every N steps, a refresh falls due."""
        kind = event.get("event")
        if kind not in READ:
            return
        with self._lock:
            (self._once if kind in ONCE else self._events).append(event)
            if len(self._events) > 2 * (self._max_steps + self._max_other):  # thin now and then, not per event
                self._events = bounded(self._events, self._max_steps, self._max_other)
            self._started |= kind == "run_started"
            self._resumed |= kind == "resumed"
            if kind == "step":
                self._steps += 1
            due = kind == "step" and self._steps % self.every_steps == 0
        if due and self._loop is not None:
            self._loop.call_soon_threadsafe(self._fall_due)

    def _fall_due(self) -> None:
        self._due = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refresh_while_due())

    async def _refresh_while_due(self) -> None:
        while self._due:
            self._due = False
            await self.refresh()

    async def refresh(self, final: bool = False) -> bool:
        """Render the page from the events so far (worker thread) and write it; never raises."""
        with self._lock:
            own = [*self._once, *self._events]
            resumed = self._resumed
        try:
            if resumed and self._earlier is None:
                self._earlier = await self._read_earlier()
            page, history = await asyncio.to_thread(self._render, self._earlier or [], own)
            async with self._store() as store:
                await store.write_bytes(HISTORY_KEY, history)
                await store.write_bytes(REPORT_KEY, page)
        except Exception as e:  # the report is a view of the run, never a reason to stop it
            log.warning("report_failed", uri=self.where, error=f"{type(e).__name__}: {e}")
            return False
        self.written += 1
        if self.written == 1 and not final:  # where to look, once; the run's `run_started` names it too
            log.info("report_written", uri=self.where, every_steps=self.every_steps,
                     earlier_events=len(self._earlier or []))
        return True

    async def _read_earlier(self) -> list[dict[str, Any]]:
        """The events of the runs this one resumed, as their keeper left them; none when there is
        no such file (a run of an older version) or it cannot be read."""
        try:
            async with self._store() as store:
                if not await store.exists(HISTORY_KEY):
                    return []
                raw = await store.read_bytes(HISTORY_KEY, max_bytes=MAX_HISTORY_BYTES)
        except Exception as e:
            log.warning("report_history_unreadable", uri=self.where, error=f"{type(e).__name__}: {e}")
            return []
        events, _ = parse_events(raw.splitlines())
        return [e for e in events if e["event"] in READ]

    def _render(self, earlier: list[dict[str, Any]], own: list[dict[str, Any]]) -> tuple[bytes, bytes]:
        kept = {id(e) for e in bounded([*earlier, *own], self._max_steps, self._max_other)}
        earlier = [e for e in earlier if id(e) in kept]
        own = [e for e in own if id(e) in kept]
        sources = [("earlier runs", earlier), ("this run", own)] if earlier else [("this run", own)]
        page = render_html(build_run_log(sources), title=self.title).encode("utf-8")
        history = b"".join(orjson.dumps(e) + b"\n" for e in [*earlier, *own])
        return page, history

    async def aclose(self) -> None:
        """Stop listening, let a refresh in flight finish, and write the final page (when the run
        started: a run that failed before its first event leaves no report)."""
        remove_listener(self.on_event)
        self._due = False
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if not self._started:
            return
        try:
            await asyncio.wait_for(self.refresh(final=True), FINAL_WRITE_TIMEOUT_S)
        except TimeoutError:
            log.warning("report_failed", uri=self.where, error=f"no write within {FINAL_WRITE_TIMEOUT_S:.0f} s")


def bounded(events: list[dict[str, Any]], max_steps: int, max_other: int) -> list[dict[str, Any]]:
    """`events` in their order, with at most `max_steps` `step` events (the newest max_steps/2 all
    kept, the older ones evenly thinned to the rest, the first kept) and the newest `max_other`
    others; ONCE events all kept."""
    steps = [e for e in events if e.get("event") == "step"]
    if len(steps) > max_steps >= 2:
        recent = max_steps // 2  # the newest half of the room: every step
        older, room = steps[:-recent], max_steps - recent
        steps = [older[i * len(older) // room] for i in range(room)] + steps[-recent:]  # evenly spaced
    others = [e for e in events if e.get("event") != "step" and e.get("event") not in ONCE]
    keep = {id(e) for e in [*steps, *others[max(0, len(others) - max_other):]]}
    return [e for e in events if id(e) in keep or e.get("event") in ONCE]
