"""`jobrl-async run` as users run it: a real subprocess, real signals, real HTTP for metrics."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from jobrl_async.ops.metrics import RunMetrics, serve_metrics

from .test_pipeline import make_pipeline, small_config

pytestmark = pytest.mark.slow

SMALL = """
[training]
batch_contexts = 2
attempts = 4
[validation]
max_contexts = 2
[generation]
max_new_tokens = 96
[judge]
rpm = 60000
tpm = 100000000
[checkpoints]
latest_every_steps = 1
"""


def config_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL + extra)
    return path


def start(tmp_path: Path, *args: str, stderr: int | None = subprocess.PIPE,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jobrl_async", "run", "--dry-run", "--config", str(config_file(tmp_path)),
           "--checkpoints", str(tmp_path / "ckpt"), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, cwd=tmp_path, env={**os.environ, **(env or {})})


def wait_for_event(proc: subprocess.Popen, name: str) -> dict:
    """Read the run's stdout until the event `name` is logged (no fixed sleeps before signals)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        event = orjson.loads(line)
        if event["event"] == name:
            return event
    raise AssertionError(f"the run ended before logging {name!r}")


def json_lines(raw: bytes) -> list[dict]:
    return [orjson.loads(line) for line in raw.splitlines()]  # raises on any non-JSON line


def test_dry_run_completes_steps_and_writes_checkpoints(tmp_path: Path) -> None:
    proc = start(tmp_path, "--max-steps", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    events = json_lines(out)
    assert all({"event", "level", "timestamp"} <= e.keys() for e in events)
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2]
    summary = events[-1]
    assert summary["event"] == "run_summary"
    assert summary["trajectories"] == {"scored": 2 * (8 + 4), "judge_failed": 0, "dropped": 0}
    pointer = json.loads((tmp_path / "ckpt" / "latest.json").read_text())
    assert pointer["step"] == 2
    assert (tmp_path / "ckpt" / "best.json").exists()


def test_sigterm_stops_cleanly_with_a_latest_checkpoint_and_resume_continues(tmp_path: Path) -> None:
    proc = start(tmp_path, "--max-steps", "40")
    seen_step = False
    lines = []
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if orjson.loads(line)["event"] == "step":
            seen_step = True
            proc.send_signal(signal.SIGTERM)
            break
    assert seen_step
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err.decode()
    events = json_lines(b"".join(lines) + rest)
    summary = events[-1]
    assert summary["event"] == "run_summary" and summary["stopped_by"] == "SIGTERM"
    last = summary["last_step"]
    assert 1 <= last < 40
    assert json.loads((tmp_path / "ckpt" / "latest.json").read_text())["step"] == last

    resumed = start(tmp_path, "--max-steps", str(last + 1))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()
    events = json_lines(out)
    assert [e["step"] for e in events if e["event"] == "resumed"] == [last]
    assert [e["step"] for e in events if e["event"] == "step"] == [last + 1]


def test_progress_on_a_terminal_never_mixes_into_stdout(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    proc = start(tmp_path, "--max-steps", "2", stderr=follower)
    os.close(follower)
    out, _ = proc.communicate(timeout=300)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    assert proc.returncode == 0
    assert json_lines(out)  # every stdout line is JSON
    assert b"step 2/2" in drawn  # the live line went to the terminal


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metric(text: bytes, name: str) -> float:
    for line in text.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


async def test_metrics_move_during_a_run_and_healthz_flips_when_the_judge_hangs(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "ckpt", **{"pipeline.max_steps": 6, "validation.every_steps": 0})
    metrics = RunMetrics(stall_timeout_s=3.0)
    server = await serve_metrics(metrics, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    pipeline = await make_pipeline(cfg, tmp_path)
    pipeline.observers.metrics = metrics
    hang = asyncio.Event()
    score = pipeline.parts.judge.score_trajectory
    scored = {"n": 0}

    async def hangs_after_two_steps(t):  # noqa: ANN001, ANN202
        if t.step >= 3:
            await hang.wait()  # the judge API stops answering
        scored["n"] += 1
        return await score(t)

    pipeline.parts.judge.score_trajectory = hangs_after_two_steps  # type: ignore[method-assign]
    run = asyncio.create_task(pipeline.run())
    try:
        steps_seen = []
        for _ in range(300):
            _, body = await asyncio.to_thread(get, f"{base}/metrics")
            steps_seen.append(metric(body, "jobrl_steps_total"))
            if steps_seen[-1] >= 2:
                break
            await asyncio.sleep(0.2)
        assert steps_seen[0] < steps_seen[-1] == 2  # the counter moved while we watched
        assert (await asyncio.to_thread(get, f"{base}/healthz"))[0] == 200
        status, body = 200, b""
        for _ in range(100):
            status, body = await asyncio.to_thread(get, f"{base}/healthz")
            if status == 503:
                break
            await asyncio.sleep(0.2)
        assert status == 503 and b"stalled" in body
    finally:
        pipeline.stop.set()
        hang.set()
        await asyncio.wait_for(run, 120)
        await server.aclose()


def test_a_second_signal_stops_at_once_with_the_signal_exit_code(tmp_path: Path) -> None:
    proc = start(tmp_path, "--max-steps", "40", env={  # the grace alone would take minutes
        "JOBRL_PIPELINE__SHUTDOWN_GRACE_S": "600", "JOBRL_JUDGE__STUB_LATENCY_MS": "400", "JOBRL_JUDGE__MAX_CONCURRENCY": "2"})
    assert proc.stdout is not None
    wait_for_event(proc, "run_started")
    proc.send_signal(signal.SIGINT)
    wait_for_event(proc, "shutdown_started")  # the first signal is in: the grace has begun
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert time.monotonic() - started < 60  # not the 600 s grace
    assert b"Traceback" not in err
    summary = json_lines(rest)[-1]
    assert summary["event"] == "run_summary" and summary["stopped_by"] == "forced"


def test_sigterm_in_a_judge_bound_run_counts_every_judged_trajectory_as_learned_or_not(tmp_path: Path) -> None:
    proc = start(tmp_path, "--max-steps", "40", env={  # judging is what takes the time
        "JOBRL_PIPELINE__SHUTDOWN_GRACE_S": "0.5", "JOBRL_JUDGE__STUB_LATENCY_MS": "150", "JOBRL_JUDGE__MAX_CONCURRENCY": "4"})
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if orjson.loads(line)["event"] == "step":
            proc.send_signal(signal.SIGTERM)  # step 2 is being judged, maybe learned
            break
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err.decode()
    log_bytes = b"".join(lines) + rest
    events = json_lines(log_bytes)
    summary = events[-1]
    assert summary["event"] == "run_summary" and summary["stopped_by"] == "SIGTERM"
    learning = summary["training_trajectories"]
    steps = [e for e in events if e["event"] == "step"]
    assert learning["learned"] == sum(e["trajectories"]["scored"] + e["trajectories"]["judge_failed"] for e in steps)
    assert learning["judged"] == learning["learned"] + learning["unlearned"] > 0
    unlearned = [e for e in events if e["event"] == "judged_trajectories_unlearned"]
    assert sum(e["n"] for e in unlearned) == learning["unlearned"]
    # every training trajectory: judged (learned or not) or dropped before its judging ended
    train_dropped = sum(e["trajectories"]["dropped"] for e in steps)
    assert learning["judged"] <= summary["trajectories"]["scored"] + summary["trajectories"]["judge_failed"]
    assert train_dropped <= summary["trajectories"]["dropped"]

    (tmp_path / "run.log").write_bytes(log_bytes)
    page = subprocess.run([sys.executable, "-m", "jobrl_async", "report", str(tmp_path / "run.log"),
                           "-o", str(tmp_path / "report.html")], capture_output=True, cwd=tmp_path)
    assert page.returncode == 0, page.stderr.decode()
    html = (tmp_path / "report.html").read_text()
    assert f"{learning['judged']:,}: {learning['learned']:,} learned" in html
