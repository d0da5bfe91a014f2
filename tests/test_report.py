"""`jobrl-async report` and the report the run keeps fresh (issue 17).

The logs are real: a dry run (tiny model, stub judge) for two steps, resumed for a third
(tests/support/dry_run.py, made once per session). Pages are checked as data (the figures' JSON
and the header in the HTML) and, once, in real headless Chromium.
"""

from __future__ import annotations

import asyncio
import html
import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobrl_async.config import load_config
from jobrl_async.ops import log
from jobrl_async.report import build_run_log, iter_lines, read_logs, render_html
from jobrl_async.report.keeper import HISTORY_KEY, REPORT_KEY, ReportKeeper, bounded
from jobrl_async.report.runlog import parse_events
from jobrl_async.report.sections import header_rows, judge_totals, sections, trajectory_totals
from jobrl_async.storage import LocalStore

from .support.browser import chromium, png_size, render_page
from .support.dry_run import DryRunLogs, dry_run_logs

SECTIONS = ("reward", "judge", "timeline", "learner", "checkpoints")


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> DryRunLogs:
    return dry_run_logs(tmp_path_factory)


def report_cli(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobrl_async", "report", *args], cwd=cwd, input=stdin,
                          capture_output=True, timeout=120)


def figures(page: str) -> dict[str, Any]:
    match = re.search(r'<script id="figures" type="application/json">(.*?)</script>', page, re.S)
    assert match, "no figures in the page"
    return orjson.loads(match.group(1))


def header(page: str) -> dict[str, str]:
    block = re.search(r'<div class="header"><table>(.*?)</table>', page, re.S)
    assert block
    return {html.unescape(k): html.unescape(v) for k, v in re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", block.group(1))}


def events_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def write_events(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def trace(fig: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in fig["data"] if t.get("name") == name)


# ---------------------------------------------------------------- the command, on real logs


@pytest.mark.slow
def test_report_of_a_dry_run_has_every_section_with_data(logs: DryRunLogs, tmp_path: Path) -> None:
    r = report_cli(str(logs.first), "-o", "page.html", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    page = (tmp_path / "page.html").read_text()
    assert "class=\"empty\"" not in page  # no section without data
    figs = figures(page)
    assert set(figs) == {f"plot-{k}" for k in SECTIONS}
    run_events = events_of(logs.first)
    steps = [e for e in run_events if e["event"] == "step"]
    started = next(e for e in run_events if e["event"] == "run_started")
    assert trace(figs["plot-reward"], "reward mean")["y"] == [s["reward_mean"] for s in steps]
    assert trace(figs["plot-reward"], "validation score")["y"] == [s["validation_score"] for s in steps]
    best = max(steps, key=lambda s: s["validation_score"])
    assert any(t["name"].startswith(f"best: {best['validation_score']:.4f} at step {best['step']}")
               for t in figs["plot-reward"]["data"] if t.get("name"))
    assert trace(figs["plot-timeline"], "generator")["y"] == [s["busy"]["generator"] for s in steps]
    assert trace(figs["plot-timeline"], "device idle")["y"] == [s["device_idle_fraction"] for s in steps]
    assert trace(figs["plot-learner"], "loss")["y"] == [s["loss"] for s in steps]
    assert trace(figs["plot-learner"], "injection_flagged")["y"] == [s["injection_flagged"] for s in steps]
    saved = [e for e in run_events if e["event"] == "checkpoint_saved" and e["kind"] == "latest"]
    assert trace(figs["plot-checkpoints"], "latest")["x"] == [e["step"] for e in saved]
    rpm_quota = trace(figs["plot-judge"], "RPM quota")
    assert rpm_quota["y"] == [started["judge_rpm"]] * 2
    rows = header(page)
    assert rows["config digest"] == started["config_digest"] and len(started["config_digest"]) == 16
    assert rows["steps"] == "2 (step 1 to 2)"
    assert rows["best validation score"] == f"{best['validation_score']:.4f} at step {best['step']}"
    summary = next(e for e in run_events if e["event"] == "run_summary")
    scored = summary["trajectories"]["scored"]
    assert rows["trajectories"].startswith(f"{scored:,} scored")
    assert rows["batch"] == "2 contexts x 4 attempts"
    assert "60,000 requests/min" in rows["judge quota"]
    assert r.stderr.decode().startswith("jobrl-async: wrote page.html (2 steps, ")


@pytest.mark.slow
def test_report_joins_a_resumed_run_by_step_whatever_order_the_logs_are_named(logs: DryRunLogs,
                                                                               tmp_path: Path) -> None:
    r = report_cli(str(logs.resumed), str(logs.first), cwd=tmp_path)  # piped: the page comes on stdout
    assert r.returncode == 0, r.stderr.decode()
    page = r.stdout.decode()
    figs = figures(page)
    assert "class=\"empty\"" not in page
    assert trace(figs["plot-reward"], "reward mean")["x"] == [1, 2, 3]
    assert trace(figs["plot-learner"], "loss")["x"] == [1, 2, 3]
    resumed = next(e for e in events_of(logs.resumed) if e["event"] == "resumed")
    marks = [s for s in figs["plot-reward"]["layout"]["shapes"] if s["type"] == "line"]
    assert [m["x0"] for m in marks] == [resumed["step"] + 0.5]
    rows = header(page)
    assert rows["steps"] == "3 (step 1 to 3)"
    assert "in 2 runs (resumed)" in rows["wall time"]
    totals = [next(e for e in events_of(p) if e["event"] == "run_summary")["trajectories"]["scored"]
              for p in (logs.first, logs.resumed)]
    assert rows["trajectories"].startswith(f"{sum(totals):,} scored")


@pytest.mark.slow
def test_report_reads_a_log_on_stdin(logs: DryRunLogs, tmp_path: Path) -> None:
    r = report_cli("-", "-o", "from-stdin.html", cwd=tmp_path, stdin=logs.first.read_bytes())
    assert r.returncode == 0, r.stderr.decode()
    assert trace(figures((tmp_path / "from-stdin.html").read_text())["plot-reward"], "reward mean")["x"] == [1, 2]


@pytest.mark.slow
def test_the_run_keeps_its_report_fresh_beside_its_checkpoints(logs: DryRunLogs) -> None:
    """report.every_steps = 1: each run wrote report.html under --checkpoints (said once, before
    its run_summary, which stays the last event); the resumed run's page covers both runs."""
    for path in (logs.first, logs.resumed):
        events = events_of(path)
        written = [e for e in events if e["event"] == "report_written"]
        assert len(written) == 1 and written[0]["uri"] == f"{logs.checkpoints}/{REPORT_KEY}"
        assert next(e for e in events if e["event"] == "run_started")["report"] == written[0]["uri"]
        assert events[-1]["event"] == "run_summary"
    assert written[0]["earlier_events"] > 0  # the resumed run read the first run's history back
    page = (logs.checkpoints / REPORT_KEY).read_text()
    all_steps = [e["step"] for p in (logs.first, logs.resumed) for e in events_of(p) if e["event"] == "step"]
    assert all_steps == [1, 2, 3]
    assert trace(figures(page)["plot-reward"], "reward mean")["x"] == all_steps
    assert "in 2 runs (resumed)" in header(page)["wall time"]
    assert header(page)["config digest"] == next(
        e for e in events_of(logs.resumed) if e["event"] == "run_started")["config_digest"]


# ---------------------------------------------------------------- pages from thinner or rougher logs


def without_validation(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    drop = {"validation_score", "validation_trajectories", "validation_judge_failed_share", "best_score"}
    return [{k: v for k, v in e.items() if k not in drop} for e in events]


def with_judge_pauses(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log of a run whose judge pool paused twice (two endpoints), with judge counts per step."""
    out: list[dict[str, Any]] = []
    steps = [e for e in events if e["event"] == "step"]
    per_step = {"calls": 40, "tokens": 9000, "http_429": 3, "dedup_hits": 1}
    for e in events:
        if e["event"] == "step":
            e = {**e, "judge": per_step}
        elif e["event"] == "run_summary":  # the run's totals, as the judge counted them
            e = {**e, "judge": {k: v * len(steps) for k, v in per_step.items()}}
        out.append(e)
        if e["event"] == "step" and e["step"] == steps[0]["step"]:
            t = e["timestamp"]
            out += [{"event": "judge_paused", "level": "warning", "timestamp": t, "endpoint": "east",
                     "reason": "5 offers failed in a row"},
                    {"event": "judge_paused", "level": "warning", "timestamp": t, "endpoint": "west"},
                    {"event": "judge_resumed", "level": "info", "timestamp": steps[-1]["timestamp"], "endpoint": "east"}]
    return out  # "west" never resumed: paused until the log ends


@pytest.mark.slow
def test_a_log_without_validation_still_renders_and_says_so(logs: DryRunLogs, tmp_path: Path) -> None:
    path = write_events(tmp_path / "noval.log", without_validation(events_of(logs.first)))
    r = report_cli(str(path), "-o", "page.html", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    page = (tmp_path / "page.html").read_text()
    assert "No validation round in this log." in page
    assert header(page)["best validation score"] == "no validation in this log"
    assert all(t.get("name") != "validation score" for t in figures(page)["plot-reward"]["data"])


@pytest.mark.slow
def test_judge_pauses_are_shaded_per_endpoint_and_judge_counts_drawn(logs: DryRunLogs) -> None:
    run = build_run_log([("paused.log", with_judge_pauses(events_of(logs.first)))])
    assert [(p.endpoint, p.resumed) for p in run.pauses] == [("east", True), ("west", False)]
    assert run.pauses[1].end == run.last_ts  # paused until the log ends
    judge = next(s for s in sections(run) if s.key == "judge")
    shapes = judge.figure["layout"]["shapes"]
    assert len(shapes) == 2 and shapes[0]["fillcolor"] != shapes[1]["fillcolor"]
    labels = [a["text"] for a in judge.figure["layout"]["annotations"]]
    assert labels == ["paused: east", "paused: west (to the end)"]
    names = {t["name"] for t in judge.figure["data"]}
    assert {"calls/min", "tokens/min", "HTTP 429s", "TPM quota", "RPM quota"} <= names
    assert any("paused 2 time(s)" in n for n in judge.notes)
    steps = len(run.steps)
    assert judge_totals(run) == {"calls": 40 * steps, "tokens": 9000 * steps, "http_429": 3 * steps,
                                 "dedup_hits": steps}


def test_a_log_with_only_unknown_events_gives_a_page_whose_sections_say_why(tmp_path: Path) -> None:
    events = [{"event": "something_new", "level": "info", "timestamp": "2026-01-01T00:00:00Z", "x": 1},
              {"event": "model_loaded", "level": "info", "timestamp": "2026-01-01T00:00:05Z"}]
    run = build_run_log([("odd.log", events)])
    parts = sections(run)
    assert all(s.figure is None and s.empty for s in parts)
    page = render_html(run)
    assert page.count('class="empty"') == len(SECTIONS)
    assert figures(page) == {}
    assert "2 log events (2 not drawn here)" in page


@pytest.mark.parametrize("content, why", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 40, "binary"),
    (b"hello\nthis is a text file\n", "text"),
    (b"", "empty"),
    (b'{"a": 1}\n[1, 2]\n', "JSON without log events"),
])
def test_a_file_that_is_not_a_run_log_exits_1_with_one_line(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "not-a-log.txt"
    path.write_bytes(content)
    r = report_cli(str(path), "-o", "page.html", cwd=tmp_path)
    assert r.returncode == 1, why
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "is not a jobrl-async run log" in lines[0], lines
    assert "Traceback" not in r.stderr.decode()
    assert not (tmp_path / "page.html").exists()


def test_missing_log_and_unwritable_output_are_one_line_each(tmp_path: Path) -> None:
    r = report_cli(str(tmp_path / "nope.log"), cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.decode().strip() == f"jobrl-async: report: cannot read {tmp_path / 'nope.log'}: No such file or directory"
    log_file = write_events(tmp_path / "ok.log", [{"event": "step", "level": "info", "timestamp": "2026-01-01T00:00:00Z", "step": 1}])
    r = report_cli(str(log_file), "-o", str(tmp_path / "missing" / "page.html"), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.decode().strip().splitlines() == [
        f"jobrl-async: report: cannot write {tmp_path / 'missing' / 'page.html'}: No such file or directory"]


# ---------------------------------------------------------------- reading logs (pure)


def test_lines_that_are_not_events_are_skipped_and_counted() -> None:
    good = b'{"event": "step", "level": "info", "timestamp": "2026-01-01T00:00:00Z", "step": 1}\n'
    lines = [good, b"step 1/3 reward 4.2\r\n", b"\n", b'{"event": "step", "level": "info", "timestam', good]
    events, skipped = parse_events(lines)
    assert len(events) == 2 and skipped == 2


def test_an_overlong_line_is_skipped_without_being_held_whole() -> None:
    good = b'{"event": "step", "level": "info", "timestamp": "2026-01-01T00:00:00Z", "step": 1}\n'
    stream = io.BytesIO(b"x" * 5000 + b"\n" + good)
    lines = list(iter_lines(stream, max_bytes=1024))
    assert lines == [b"", good]
    events, skipped = parse_events(lines)
    assert len(events) == 1 and skipped == 1


def ev(name: str, t: int, **fields: Any) -> dict[str, Any]:
    return {"event": name, "level": "info", "timestamp": f"2026-01-01T00:{t // 60:02d}:{t % 60:02d}Z", **fields}


def test_a_step_done_again_after_a_resume_is_the_later_one() -> None:
    first = [ev("run_started", 0), ev("step", 10, step=1, reward_mean=1.0), ev("step", 20, step=2, reward_mean=2.0),
             ev("step", 30, step=3, reward_mean=3.0)]  # killed after step 3; `latest` was step 2
    second = [ev("resumed", 40, step=2), ev("run_started", 41), ev("step", 50, step=3, reward_mean=3.5),
              ev("run_summary", 55, trajectories={"scored": 7, "judge_failed": 1, "dropped": 0})]
    run = read_logs([("second.log", [orjson.dumps(e) for e in second]),
                     ("first.log", [orjson.dumps(e) for e in first])])
    assert [s["reward_mean"] for s in run.ordered_steps()] == [1.0, 2.0, 3.5]
    assert [s.source for s in run.segments] == ["first.log", "second.log"]
    assert [s.wall_s for s in run.segments] == [30.0, 15.0]
    # the killed run has no summary: its steps count; the resumed one's summary counts
    assert trajectory_totals(run) == {"scored": 7, "judge_failed": 1, "dropped": 0}
    rows = dict(header_rows(run))
    assert rows["wall time"] == "45 s in 2 runs (resumed)"


def test_two_processes_in_one_file_are_two_segments() -> None:
    events = [ev("run_started", 0), ev("step", 5, step=1), ev("run_summary", 9), ev("report_written", 10),
              ev("checkpoint_lease_acquired", 20), ev("resumed", 21, step=1), ev("run_started", 22),
              ev("step", 30, step=2), ev("run_summary", 31)]
    run = build_run_log([("both.log", events)])
    assert [(s.wall_s, len(s.steps)) for s in run.segments] == [(10.0, 1), (11.0, 1)]


def test_best_validation_is_the_earliest_step_with_the_top_score() -> None:
    events = [ev("step", i, step=i, validation_score=score) for i, score in enumerate([3.0, 5.0, 4.0, 5.0], 1)]
    assert dict(header_rows(build_run_log([("x", events)])))["best validation score"] == "5.0000 at step 2"


def test_no_log_value_can_end_the_pages_script_blocks() -> None:
    nasty = "</script><script>alert(1)</script>"
    events = [ev("run_started", 0, model=nasty), ev("step", 5, step=1, reward_mean=1.0),
              ev("checkpoint_saved", 6, step=1, kind="best", uri=nasty)]
    page = render_html(build_run_log([("x", events)]))
    assert "<script>alert(1)" not in page
    assert header(page)["model"] == nasty  # shown as text, escaped
    assert figures(page)["plot-checkpoints"]["data"][0]["text"] == [html.escape(f"{nasty} at {events[2]['timestamp']}")]


# ---------------------------------------------------------------- the log listener and the keeper


def test_log_listeners_get_each_event_redacted_and_cannot_break_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-listener-secret-123456")
    out = io.BytesIO()
    log.configure("json", "info", stream=out)
    seen: list[dict[str, Any]] = []

    def broken(_event: dict[str, Any]) -> None:
        raise RuntimeError("a listener bug")

    log.add_listener(broken)
    log.add_listener(seen.append)
    try:
        log.get_logger("test").info("step", step=1, note="key sk-listener-secret-123456")
    finally:
        log.remove_listener(broken)
        log.remove_listener(seen.append)
    log.get_logger("test").info("step", step=2)
    assert [e["step"] for e in seen] == [1]
    assert seen[0]["note"] == "key [REDACTED]" and seen[0]["event"] == "step" and "timestamp" in seen[0]
    assert [orjson.loads(line)["step"] for line in out.getvalue().splitlines()] == [1, 2]


class Pages(LocalStore):
    """A real local store that keeps each report.html written, in order (an event per write for
    tests to wait on), and can fail the next `fail` writes."""

    def __init__(self, root: Path, fail: int = 0) -> None:
        super().__init__(root)
        self.pages: list[bytes] = []
        self.fail = fail
        self.changed = asyncio.Event()

    async def write_bytes(self, key: str, data: bytes) -> None:
        try:
            if self.fail:
                self.fail -= 1
                raise OSError("disk full")
            await super().write_bytes(key, data)
            if key == REPORT_KEY:
                self.pages.append(data)
        finally:
            self.changed.set()

    async def wait_for(self, n: int) -> None:
        while len(self.pages) < n:
            self.changed.clear()
            await self.changed.wait()

    def keeper(self, every_steps: int) -> ReportKeeper:
        return ReportKeeper(every_steps, lambda: self, "mem://report.html")


def step_events(logger: Any, steps: range) -> None:
    for i in steps:
        logger.info("step", step=i, epoch=0, reward_mean=float(i), reward_std=0.5,
                    busy={"generator": 0.5, "judge": 0.4, "learner": 0.4}, device_idle_fraction=0.1)


@pytest.fixture
def captured_log() -> io.BytesIO:
    out = io.BytesIO()
    log.configure("json", "info", stream=out)
    return out


async def test_keeper_writes_every_n_steps_and_once_at_the_end(captured_log: io.BytesIO, tmp_path: Path) -> None:
    pages = Pages(tmp_path)
    keeper = pages.keeper(2)
    keeper.start()
    logger = log.get_logger("pipeline")
    logger.info("run_started", model="tiny", config_digest="0123456789abcdef")
    step_events(logger, range(1, 4))  # steps 1-3: one page due (after step 2)
    await pages.wait_for(1)
    logger.info("other_event")
    logger.info("run_summary", trajectories={"scored": 3, "judge_failed": 0, "dropped": 0})
    await keeper.aclose()
    assert len(pages.pages) == 2
    final = pages.pages[-1].decode()
    assert trace(figures(final)["plot-reward"], "reward mean")["x"] == [1, 2, 3]
    assert header(final)["config digest"] == "0123456789abcdef"
    logged = [orjson.loads(line) for line in captured_log.getvalue().splitlines()]
    assert [e["event"] for e in logged if e["event"] == "report_written"] == ["report_written"]
    assert logged[-1]["event"] == "run_summary"  # the final page is written silently
    step_events(logger, range(4, 8))  # after aclose the keeper no longer listens
    await asyncio.sleep(0)
    assert len(pages.pages) == 2


async def test_steps_logged_from_worker_threads_make_pages_too(captured_log: io.BytesIO, tmp_path: Path) -> None:
    pages = Pages(tmp_path)
    keeper = pages.keeper(1)
    keeper.start()
    logger = log.get_logger("pipeline")
    logger.info("run_started")
    await asyncio.to_thread(step_events, logger, range(1, 3))
    await pages.wait_for(1)
    await keeper.aclose()
    assert trace(figures(pages.pages[-1].decode())["plot-reward"], "reward mean")["x"] == [1, 2]


async def test_a_failed_write_is_one_warning_and_the_next_page_still_comes(captured_log: io.BytesIO, tmp_path: Path) -> None:
    pages = Pages(tmp_path, fail=1)
    keeper = pages.keeper(1)
    keeper.start()
    logger = log.get_logger("pipeline")
    logger.info("run_started")
    step_events(logger, range(1, 2))  # its page fails to write
    while b"report_failed" not in captured_log.getvalue():
        await asyncio.sleep(0.01)
    step_events(logger, range(2, 3))
    await pages.wait_for(1)
    await keeper.aclose()
    logged = [orjson.loads(line) for line in captured_log.getvalue().splitlines()]
    failures = [e for e in logged if e["event"] == "report_failed"]
    assert len(failures) == 1 and failures[0]["level"] == "warning" and "disk full" in failures[0]["error"]
    assert failures[0]["uri"] == "mem://report.html"
    assert len(pages.pages) == 2  # step 2's page and the final one


async def test_a_resumed_run_draws_the_earlier_runs_from_the_history_beside_the_page(
    captured_log: io.BytesIO, tmp_path: Path
) -> None:
    pages = Pages(tmp_path)
    first = pages.keeper(1)
    first.start()
    logger = log.get_logger("pipeline")
    logger.info("run_started")
    step_events(logger, range(1, 3))
    await first.aclose()
    assert (tmp_path / HISTORY_KEY).exists()
    resumed = pages.keeper(1)
    resumed.start()
    logger.info("resumed", step=2)
    logger.info("run_started")
    step_events(logger, range(3, 4))
    await resumed.aclose()
    page = pages.pages[-1].decode()
    assert trace(figures(page)["plot-reward"], "reward mean")["x"] == [1, 2, 3]
    # a fresh run (no `resumed`) ignores the history and starts it anew
    fresh = pages.keeper(1)
    fresh.start()
    logger.info("run_started")
    step_events(logger, range(1, 2))
    await fresh.aclose()
    assert trace(figures(pages.pages[-1].decode())["plot-reward"], "reward mean")["x"] == [1]
    assert (tmp_path / HISTORY_KEY).read_bytes().count(b'"event":"step"') == 1


async def test_a_history_of_garbage_adds_nothing_and_the_page_shows_this_run(
    captured_log: io.BytesIO, tmp_path: Path
) -> None:
    pages = Pages(tmp_path)
    (tmp_path / HISTORY_KEY).write_bytes(b"not json\n" + b"x" * 100)
    keeper = pages.keeper(1)
    keeper.start()
    logger = log.get_logger("pipeline")
    logger.info("resumed", step=4)
    logger.info("run_started")
    step_events(logger, range(5, 6))
    await keeper.aclose()
    assert trace(figures(pages.pages[-1].decode())["plot-reward"], "reward mean")["x"] == [5]


async def test_a_run_that_never_started_leaves_no_report(captured_log: io.BytesIO, tmp_path: Path) -> None:
    pages = Pages(tmp_path)
    keeper = pages.keeper(1)
    keeper.start()
    log.get_logger("checkpoints").info("checkpoint_lease_acquired")
    await keeper.aclose()
    assert pages.pages == []


async def test_the_keeper_writes_report_html_to_s3(captured_log: io.BytesIO, s3_env: Any) -> None:
    cfg = load_config(env={"JOBRL_CHECKPOINTS__URI": s3_env.uri("runs/a"), "JOBRL_REPORT__EVERY_STEPS": "1"})
    keeper = ReportKeeper.for_run(cfg)
    assert keeper is not None and keeper.where == f"{s3_env.uri('runs/a')}/{REPORT_KEY}"
    keeper.start()
    logger = log.get_logger("pipeline")
    logger.info("run_started")
    step_events(logger, range(1, 3))
    await keeper.aclose()
    body = s3_env.client().get_object(Bucket=s3_env.bucket, Key=f"runs/a/{REPORT_KEY}")["Body"].read().decode()
    assert trace(figures(body)["plot-reward"], "reward mean")["x"] == [1, 2]
    assert keeper.written >= 1


def test_report_every_steps_0_turns_the_keeper_off() -> None:
    assert ReportKeeper.for_run(load_config(env={"JOBRL_REPORT__EVERY_STEPS": "0"})) is None
    assert load_config(env={}).report.every_steps == 10


# ---------------------------------------------------------------- a real browser


@pytest.mark.slow
def test_the_page_renders_in_headless_chromium(logs: DryRunLogs, tmp_path: Path) -> None:
    if chromium() is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's package)")
    real = tmp_path / "real.html"
    real.write_text(render_html(read_logs([(str(logs.first), iter_lines(logs.first.open("rb"))),
                                           (str(logs.resumed), iter_lines(logs.resumed.open("rb")))])))
    paused = tmp_path / "paused.html"
    paused.write_text(render_html(build_run_log([("p", without_validation(with_judge_pauses(events_of(logs.first))))])))
    for page, steps in ((real, 3), (paused, 2)):
        result = render_page(page)
        assert result.errors == [], page.name
        assert result.external_requests == [], "the page must open offline"
        assert result.plots_drawn == len(SECTIONS)
        assert set(result.plots) == {f"plot-{k}" for k in SECTIONS}
        for plot_id, drawn in result.plots.items():
            assert drawn["svg"] >= 1 and drawn["width"] > 600 and drawn["height"] > 150, plot_id
            assert drawn["lines"] + drawn["points"] + drawn["bars"] > 0, f"{plot_id} drew nothing: {drawn}"
        assert result.plots["plot-timeline"]["bars"] >= steps  # a zero share draws no bar: at least one a step
        assert result.plots["plot-learner"]["lines"] >= 6
        width, height = png_size(result.screenshot)
        assert width == 1280 and height > 2000
        (tmp_path / f"{page.stem}.png").write_bytes(result.screenshot)


def test_reasoning_and_cached_tokens_and_dollars_are_shown_when_the_log_has_them() -> None:
    judged = {"calls": 10, "tokens": 12_000, "http_429": 0, "dedup_hits": 0, "reasoning_tokens": 400,
              "cached_tokens": 2048, "usd": 0.0125}
    events = [ev("run_started", 0), *(ev("step", 10 * i, step=i, step_s=10.0, judge=judged) for i in (1, 2, 3)),
              ev("run_summary", 40, judge={**judged, "calls": 31, "reasoning_tokens": 1_250, "usd": 0.04})]
    run = build_run_log([("reasoning.log", events)])
    rows = dict(header_rows(run))
    assert rows["judge reasoning / cached tokens"] == "1,250 / 2,048"  # the summary's totals
    assert rows["judge cost"] == "$0.04 at the configured prices"
    judge = next(s for s in sections(run) if s.key == "judge")
    names = {t["name"] for t in judge.figure["data"]}
    assert {"reasoning tokens/min", "cached tokens/min"} <= names
    classic = build_run_log([("classic.log", [ev("run_started", 0), ev("step", 10, step=1, step_s=10.0,
                                                                        judge={"calls": 1, "tokens": 9})])])
    assert "judge cost" not in dict(header_rows(classic))  # no prices, no dollars: nothing invented
    assert "reasoning tokens/min" not in {t["name"] for t in next(s for s in sections(classic)
                                                                   if s.key == "judge").figure["data"]}


def test_a_long_history_keeps_the_whole_curve_thinned_and_bounded() -> None:
    events = [ev("run_started", 0)]
    for i in range(1, 5001):
        events.append(ev("step", i, step=i, reward_mean=float(i)))
        events.append(ev("checkpoint_saved", i, step=i, kind="latest", uri="x"))  # as many again
    kept = bounded(events, max_steps=400, max_other=100)
    steps = [e["step"] for e in kept if e["event"] == "step"]
    assert len(steps) <= 400 and steps[0] == 1 and steps[-1] == 5000  # from the first step to the last
    assert steps == sorted(steps) and steps[-200:] == list(range(4801, 5001))  # the newest at full resolution
    assert max(b - a for a, b in zip(steps, steps[1:])) <= 32  # thinned, never a hole
    assert [e["event"] for e in kept].count("checkpoint_saved") == 100
    assert kept[0]["event"] == "run_started"


async def test_the_keeper_draws_a_long_run_from_its_first_step(captured_log: io.BytesIO, tmp_path: Path) -> None:
    pages = Pages(tmp_path)
    keeper = ReportKeeper(10_000, lambda: pages, "mem://report.html", max_steps=50, max_other=20)
    keeper.start()
    logger = log.get_logger("pipeline")
    logger.info("run_started")
    for i in range(1, 301):
        step_events(logger, range(i, i + 1))
        logger.info("checkpoint_saved", kind="latest", step=i, uri="x")
    await keeper.aclose()
    xs = trace(figures(pages.pages[-1].decode())["plot-reward"], "reward mean")["x"]
    assert xs[0] == 1 and xs[-1] == 300 and len(xs) <= 50
    assert (tmp_path / HISTORY_KEY).read_bytes().count(b'"event":"step"') == len(xs)


def test_embedded_json_escapes_what_an_html_parser_reads_and_odd_events_are_skipped() -> None:
    endpoint = "a<!--<script>"
    events = [ev("run_started", 0, model="m\u2028x"), ev("step", 1, step=1, reward_mean=1.0,
                                                          judge={"calls": 5, "endpoints": {endpoint: {"calls": 3}, "b": {"calls": 2}}}),
              ev("step", 2, step=2, reward_mean=2.0, judge={"calls": 5, "endpoints": {endpoint: {"calls": 3}, "b": {"calls": 2}}}),
              {"event": "step", "level": "info", "timestamp": "0001-01-01T00:00:00+14:00", "step": 3, "reward_mean": 3.0},
              ev("step", 4, step=2**64 - 1, reward_mean=4.0),
              ev("checkpoint_saved", 5, step=2**63, kind="latest", uri="x")]
    page = render_html(build_run_log([("x", events)]))
    block = page[page.index('<script id="figures"'):page.index("</script>", page.index('<script id="figures"'))]
    body = block[block.index(">") + 1:]
    assert not set(body) & {"<", ">", "&", "\u2028", "\u2029"}
    assert "<!--" not in page.split('<script>', 1)[0]  # nothing before plotly.js opens a comment
    names = [t["name"] for t in figures(page)["plot-judge"]["data"]]
    assert f"calls/min {html.escape(endpoint)}" in names
    assert trace(figures(page)["plot-reward"], "reward mean")["x"] == [1, 2, 3]  # the huge step skipped
