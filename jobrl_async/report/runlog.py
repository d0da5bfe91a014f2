"""A run as its JSON log tells it: the events the report reads, joined over resumed segments.

Pure: lines (bytes) in, a `RunLog` out. A line that is not a JSON object is skipped and counted
(a console progress line, the half-written last line of a killed run); an event the report does
not read is counted and left alone. Input that holds no log event at all is not a run log.

Several logs of one run (a run resumed after a stop or a crash) are joined by step: where a
resumed run did a step again (it resumed from a `latest` older than its last logged step), the
later event wins, as the later one is what the checkpoints continued from.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from ..errors import JobrlError

MAX_LINE_BYTES = 1 << 20  # a longer "line" (a binary file, say) is skipped, never held whole
# The events the report reads; everything else in a log is counted only.
READ = frozenset({"run_started", "step", "checkpoint_saved", "judge_paused", "judge_resumed", "resumed",
                  "run_summary"})


class ReportError(JobrlError):
    kind = "report"


@dataclass
class Segment:
    """One process's part of the log: from its first event to its `run_summary` (if it got there)."""

    source: str
    started: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    first_ts: datetime.datetime | None = None
    last_ts: datetime.datetime | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        """From the process's first logged event to its last (start-up included)."""
        if self.first_ts and self.last_ts:
            return (self.last_ts - self.first_ts).total_seconds()
        return 0.0


@dataclass
class Pause:
    """The judge breaker open from `start` to `end`; a pause never resumed lasts until its process's
    last event (`resumed` False)."""

    start: datetime.datetime
    end: datetime.datetime | None
    endpoint: str | None
    reason: str | None
    resumed: bool = True


@dataclass
class RunLog:
    segments: list[Segment]
    steps: dict[int, dict[str, Any]]  # step -> its `step` event, joined over segments
    checkpoints: list[dict[str, Any]]
    pauses: list[Pause]
    resumes: list[dict[str, Any]]
    events: int  # log events read, all kinds
    other_events: int  # of those, events the report does not read
    skipped_lines: int  # lines that were not a JSON object

    @property
    def started(self) -> dict[str, Any]:
        """The latest `run_started`: the settings the run ends with."""
        return next((s.started for s in reversed(self.segments) if s.started), {})

    @property
    def first_ts(self) -> datetime.datetime | None:
        return min((s.first_ts for s in self.segments if s.first_ts), default=None)

    @property
    def last_ts(self) -> datetime.datetime | None:
        return max((s.last_ts for s in self.segments if s.last_ts), default=None)

    def ordered_steps(self) -> list[dict[str, Any]]:
        return [self.steps[k] for k in sorted(self.steps)]


# ---------------------------------------------------------------- reading


def iter_lines(stream: IO[bytes], max_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of a binary stream; a line longer than `max_bytes` is skipped (yielded as b"")."""
    while True:
        line = stream.readline(max_bytes)
        if not line:
            return
        if len(line) == max_bytes and not line.endswith(b"\n"):
            while (rest := stream.readline(max_bytes)) and not rest.endswith(b"\n"):
                pass
            line = b""
        yield line


def parse_events(lines: Iterable[bytes]) -> tuple[list[dict[str, Any]], int]:
    """The log events among `lines` (JSON objects with `event`, `level` and `timestamp`) and how
    many non-blank lines were something else."""
    events: list[dict[str, Any]] = []
    skipped = 0
    for line in lines:
        if line == b"":  # a line too long to read (iter_lines)
            skipped += 1
            continue
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(obj, dict) and is_log_event(obj):
            events.append(obj)
        else:
            skipped += 1
    return events, skipped


def is_log_event(obj: dict[str, Any]) -> bool:
    return all(isinstance(obj.get(k), str) for k in ("event", "level", "timestamp"))


def read_logs(sources: list[tuple[str, Iterable[bytes]]]) -> RunLog:
    """A RunLog from one or more logs of one run, given as (name, lines); raises ReportError
    naming the source that holds no log event."""
    per_source: list[tuple[str, list[dict[str, Any]], int]] = []
    for name, lines in sources:
        events, skipped = parse_events(lines)
        if not events:
            raise ReportError(f"{name} is not a jobrl-async run log: no line of it is a JSON log event "
                              f"(the stdout of `jobrl-async run`)")
        per_source.append((name, events, skipped))
    # resumed logs in the order they were written, whatever order they were named in
    per_source.sort(key=lambda item: _first_time(item[1]))
    return build_run_log([(name, events) for name, events, _ in per_source],
                         skipped=sum(s for _, _, s in per_source))


def build_run_log(sources: list[tuple[str, list[dict[str, Any]]]], skipped: int = 0) -> RunLog:
    """A RunLog from log events, each source's in the order they were logged."""
    segments: list[Segment] = []
    steps: dict[int, dict[str, Any]] = {}
    checkpoints: list[dict[str, Any]] = []
    resumes: list[dict[str, Any]] = []
    open_pauses: dict[str | None, dict[str, Any]] = {}
    pauses: list[Pause] = []
    total = other = 0
    for name, events in sources:
        segment = Segment(name)
        segments.append(segment)
        tail: list[datetime.datetime] = []  # times of the events after a `run_summary`
        for e in events:
            total += 1
            kind = e["event"]
            ts = parse_time(e["timestamp"])
            if kind == "run_started" and (segment.started is not None or segment.summary is not None):
                # the logs of two processes in one file: the first one's last events (after its
                # summary) and the next one's first (its lease, `resumed`...) lie either side of
                # the longest silence between them
                segment.last_ts, first_ts = _split_at_longest_gap([segment.last_ts, *tail, ts])
                segment = Segment(name, first_ts=first_ts)
                segments.append(segment)
                tail = []
            if ts and segment.summary is not None:
                tail.append(ts)
            elif ts:
                segment.first_ts = segment.first_ts or ts
                segment.last_ts = ts
            if kind not in READ:
                other += 1
            elif kind == "step" and _is_int(e.get("step")):
                steps[e["step"]] = e
                segment.steps.append(e)
            elif kind == "run_started":
                segment.started = e
            elif kind == "run_summary":
                segment.summary = e
            elif kind == "checkpoint_saved" and _is_int(e.get("step")):
                checkpoints.append(e)
            elif kind == "resumed" and _is_int(e.get("step")):
                resumes.append(e)
            elif kind == "judge_paused" and ts:
                open_pauses.setdefault(_endpoint(e), e)
            elif kind == "judge_resumed" and ts:
                began = open_pauses.pop(_endpoint(e), None)
                if began is not None:
                    pauses.append(_pause(began, ts, resumed=True))
        if tail:
            segment.last_ts = tail[-1]
        # a process that ended paused: the pause lasted until its last event
        for began in open_pauses.values():
            pauses.append(_pause(began, segment.last_ts, resumed=False))
        open_pauses.clear()
    segments = [s for s in segments if s.first_ts or s.started or s.steps or s.summary]
    pauses.sort(key=lambda p: p.start)
    return RunLog(segments, steps, checkpoints, pauses, resumes, total, other, skipped)


def _split_at_longest_gap(times: list[datetime.datetime | None]) -> tuple[datetime.datetime | None,
                                                                          datetime.datetime | None]:
    """(end of the first process, start of the next) from the times between two processes' logs."""
    known = [t for t in times if t is not None]
    if len(known) < 2:
        return (known[0], known[0]) if known else (None, None)
    i = max(range(len(known) - 1), key=lambda k: known[k + 1] - known[k])
    return known[i], known[i + 1]


def _pause(began: dict[str, Any], end: datetime.datetime | None, resumed: bool) -> Pause:
    start = parse_time(began["timestamp"])
    assert start is not None
    reason = began.get("reason")
    return Pause(start, end, _endpoint(began), reason if isinstance(reason, str) else None, resumed)


def _endpoint(e: dict[str, Any]) -> str | None:
    endpoint = e.get("endpoint")
    return endpoint if isinstance(endpoint, str) and endpoint else None


def _first_time(events: list[dict[str, Any]]) -> datetime.datetime:
    times = (parse_time(e["timestamp"]) for e in events)
    return min((t for t in times if t), default=datetime.datetime.max.replace(tzinfo=datetime.UTC))


def parse_time(text: Any) -> datetime.datetime | None:
    """An ISO 8601 timestamp as a UTC datetime (UTC when it names no zone), or None; also None when
    it lies out of datetime's range in UTC (year 1 at +14:00)."""
    if not isinstance(text, str):
        return None
    try:
        ts = datetime.datetime.fromisoformat(text)
        return ts.astimezone(datetime.UTC) if ts.tzinfo else ts.replace(tzinfo=datetime.UTC)
    except (ValueError, OverflowError):
        return None


MAX_STEP = 2**53 - 1  # larger steps are no real run's, and lose precision in the page's JavaScript


def _is_int(value: Any) -> bool:
    """A step number the report can draw: an integer in [0, MAX_STEP]."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_STEP
