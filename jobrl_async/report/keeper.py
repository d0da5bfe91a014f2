"""The run keeps `report.html` fresh under its checkpoints URI, from its own log events.

A log listener hands the keeper each event exactly as the log holds it (after redaction); it
keeps those the report reads (bounded). Every `report.every_steps` steps it renders the page in a
worker thread and writes it through the checkpoint store, in the background: training never
waits for it. One refresh runs at a time; steps that fall due meanwhile make one more refresh
right after it. A failed render or write is one warning (`report_failed`), never the run's end.
At the end of the run (after `run_summary`) the page is written once more.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..log import add_listener, get_logger, redact, remove_listener
from ..config import Config
from ..storage import open_store
from .page import render_html
from .runlog import READ, build_run_log

REPORT_KEY = "report.html"
MAX_EVENTS = 20_000  # events kept besides the run's start: ~20,000 steps, some 40 MB at worst
FINAL_WRITE_TIMEOUT_S = 60.0  # the last write may wait this long for a slow store at shutdown
ONCE = frozenset({"run_started", "resumed"})  # few and needed whatever the run's length: kept apart

log = get_logger("report")


class ReportKeeper:
    def __init__(self, every_steps: int, write: Callable[[bytes], Awaitable[None]], where: str,
                 title: str = "jobrl-async run report", max_events: int = MAX_EVENTS) -> None:
        assert every_steps >= 1
        self.every_steps = every_steps
        self.where = where  # for the log lines: the page's URI
        self.title = title
        self.written = 0  # pages written
        self._write = write
        self._once: list[dict[str, Any]] = []
        self._events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._lock = threading.Lock()  # events may be logged from worker threads
        self._steps = 0
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._due = False

    @classmethod
    def for_run(cls, cfg: Config) -> "ReportKeeper | None":
        """The keeper of a run's report, or None when `report.every_steps` is 0."""
        if cfg.report.every_steps == 0:
            return None
        uri, storage = cfg.checkpoints.uri, cfg.storage

        async def write(page: bytes) -> None:
            async with open_store(uri, storage) as store:
                await store.write_bytes(REPORT_KEY, page)

        where = redact(f"{uri.rstrip('/')}/{REPORT_KEY}")
        return cls(cfg.report.every_steps, write, where, title=f"jobrl-async run report: {redact(uri)}")

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
            self._started |= kind == "run_started"
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

    async def refresh(self) -> bool:
        """Render the page from the events so far (worker thread) and write it; never raises."""
        with self._lock:
            events = [*self._once, *self._events]
        try:
            page = await asyncio.to_thread(self._render, events)
            await self._write(page)
        except Exception as e:  # the report is a view of the run, never a reason to stop it
            log.warning("report_failed", uri=self.where, error=f"{type(e).__name__}: {e}")
            return False
        self.written += 1
        if self.written == 1:
            log.info("report_written", uri=self.where, every_steps=self.every_steps)
        return True

    def _render(self, events: list[dict[str, Any]]) -> bytes:
        return render_html(build_run_log([("this run", events)]), title=self.title).encode("utf-8")

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
            written = await asyncio.wait_for(self.refresh(), FINAL_WRITE_TIMEOUT_S)
        except TimeoutError:
            log.warning("report_failed", uri=self.where, error=f"no write within {FINAL_WRITE_TIMEOUT_S:.0f} s")
            return
        if written:
            log.info("report_written", uri=self.where, final=True)
