"""Real logs of a real run, made once per test session: `jobrl-async run --dry-run` (tiny model,
stub judge) for two steps, then resumed for a third, with the in-run report on every step and
the metrics endpoint on. While the first run trains, /metrics is scraped once after its first
step, for `promtool check metrics`.

Test modules call `dry_run_logs(tmp_path_factory)` from a session fixture of their own; the
second caller reuses the first one's files (same session folder), so the runs happen once, also
across pytest-xdist workers (the folder above the workers' own, under a file lock).
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from filelock import FileLock

from ..test_run import SMALL as RUN_SMALL

SMALL = RUN_SMALL + """
[report]
every_steps = 1
"""
RUN_TIMEOUT_S = 300


@dataclass(frozen=True)
class DryRunLogs:
    first: Path  # steps 1-2
    resumed: Path  # resumed from step 2's `latest`: step 3
    checkpoints: Path  # report.html is here, written by the runs themselves
    scrape: Path  # /metrics of the first run after its first step


def dry_run_logs(factory: pytest.TempPathFactory) -> DryRunLogs:
    session = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker has its own folder under the session's
        session = session.parent
    base = session / "dry-run-logs"
    logs = DryRunLogs(base / "first.log", base / "resumed.log", base / "checkpoints", base / "metrics.txt")
    base.mkdir(exist_ok=True)
    with FileLock(str(session / "dry-run-logs.lock")):
        done = base / "done"
        if not done.exists():
            (base / "small.toml").write_text(SMALL)
            _run(base, logs.first, logs.checkpoints, "--max-steps", "2", scrape=logs.scrape)
            _run(base, logs.resumed, logs.checkpoints, "--max-steps", "3")
            done.touch()
    return logs


def _run(base: Path, log: Path, checkpoints: Path, *args: str, scrape: Path | None = None) -> None:
    cmd = [sys.executable, "-m", "jobrl_async", "run", "--dry-run", "--config", str(base / "small.toml"),
           "--checkpoints", str(checkpoints), *args]
    if scrape:
        cmd += ["--metrics-port", str(_free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stderr = log.with_suffix(".err")
    with stderr.open("wb") as err_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_file, cwd=base, env=env)
    assert proc.stdout is not None
    url = None
    with log.open("wb") as out:
        for line in proc.stdout:  # the run's log, read as it is written: no sleeps
            out.write(line)
            event = orjson.loads(line)
            if event["event"] == "metrics_serving":
                url = event["url"]
            elif event["event"] == "step" and scrape and url and not scrape.exists():
                with urllib.request.urlopen(url, timeout=10) as resp:
                    scrape.write_bytes(resp.read())
    assert proc.wait(timeout=RUN_TIMEOUT_S) == 0, stderr.read_text()[-2000:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
