"""Checkpoints as users rely on them: kill -9 and resume, eval, generate from a checkpoint, one
run per checkpoints URI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from .test_run import config_file, json_lines

pytestmark = pytest.mark.slow


def jobrl(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobrl_async", *args], capture_output=True,
                          timeout=300, cwd=tmp_path)


def run_until(tmp_path: Path, checkpoints: str, stop_when, max_steps: int = 4) -> list[dict]:
    """Start a run and SIGKILL it the moment `stop_when(event)` is true; its events so far."""
    cmd = [sys.executable, "-m", "jobrl_async", "run", "--dry-run", "--config", str(config_file(tmp_path)),
           "--checkpoints", checkpoints, "--max-steps", str(max_steps)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path)
    assert proc.stdout is not None
    events = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        events.append(orjson.loads(line))
        if stop_when(events[-1]):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return events


def listed(tmp_path: Path, checkpoints: str) -> list[dict]:
    r = jobrl(tmp_path, "checkpoints", "list", checkpoints, "--json")
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


@pytest.fixture(params=["local", "s3"])
def checkpoints_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "ckpt")
    return request.getfixturevalue("s3_env").uri("runs/ckpt")


def test_kill_9_in_training_and_in_an_upload_then_resume_reaches_the_same_step(
    tmp_path: Path, checkpoints_uri: str
) -> None:
    # 1. killed during training, right after the first latest checkpoint landed
    first = run_until(tmp_path, checkpoints_uri,
                      lambda e: e["event"] == "checkpoint_saved" and e["kind"] == "latest")
    saved = [e["step"] for e in first if e["event"] == "checkpoint_saved" and e["kind"] == "latest"]
    # 2. resumed, then killed as soon as its first step is logged: that step's latest is uploading
    second = run_until(tmp_path, checkpoints_uri, lambda e: e["event"] == "step")
    assert [e["step"] for e in second if e["event"] == "resumed"] == [saved[-1]]
    for ckpt in listed(tmp_path, checkpoints_uri):  # whatever was listed is complete
        assert ckpt["step"] >= 0 and ckpt["size"] > 0  # step 0: a best of the adapter before any step
    # 3. resumed again, to the end
    cmd = ["run", "--dry-run", "--config", str(config_file(tmp_path)), "--checkpoints", checkpoints_uri,
           "--max-steps", "4"]
    final = jobrl(tmp_path, *cmd)
    assert final.returncode == 0, final.stderr.decode()
    events = json_lines(final.stdout)
    resumed = [e["step"] for e in events if e["event"] == "resumed"]
    assert len(resumed) == 1 and resumed[0] >= saved[-1]
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == list(range(resumed[0] + 1, 5))  # continues where it stopped, nothing twice
    assert events[-1]["event"] == "run_summary" and events[-1]["last_step"] == 4  # as an uninterrupted run
    latest = [c for c in listed(tmp_path, checkpoints_uri) if c["is_latest"]]
    assert [c["step"] for c in latest] == [4]


def test_eval_reproduces_the_score_the_run_reported(tmp_path: Path) -> None:
    ckpt = str(tmp_path / "ckpt")
    run = jobrl(tmp_path, "run", "--dry-run", "--config", str(config_file(tmp_path)), "--checkpoints", ckpt,
                "--max-steps", "2")
    assert run.returncode == 0, run.stderr.decode()
    best = json.loads((tmp_path / "ckpt" / "best.json").read_text())
    # the run's base model is named: a checkpoint never chooses it (its files are untrusted)
    r = jobrl(tmp_path, "eval", "--checkpoint", ckpt, "--judge", "stub", "--config", str(config_file(tmp_path)),
              "--model", "tiny")
    assert r.returncode == 0, r.stderr.decode()
    result = orjson.loads(r.stdout.splitlines()[-1])
    assert result["step"] == best["step"]
    assert result["validation_score"] == pytest.approx(best["validation_score"], abs=1e-9)
    assert result["trajectories"]["scored"] == 2 * 2

    context = tmp_path / "context.json"
    context.write_text('{"job_title": "Data Engineer", "language": "en", "skills": ["Python", "SQL", "Spark"]}')
    gen = jobrl(tmp_path, "generate", "--context", str(context), "--checkpoint", ckpt, "--model", "tiny")
    assert gen.returncode == 0, gen.stderr.decode()
    assert gen.stdout.strip()


def test_eval_refuses_a_tampered_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    run = jobrl(tmp_path, "run", "--dry-run", "--config", str(config_file(tmp_path)), "--checkpoints", str(ckpt),
                "--max-steps", "1")
    assert run.returncode == 0, run.stderr.decode()
    folder = ckpt / json.loads((ckpt / "best.json").read_text())["path"]
    weights = folder / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    r = jobrl(tmp_path, "eval", "--checkpoint", str(ckpt), "--judge", "stub")
    assert r.returncode == 1
    line = r.stderr.decode().strip()
    assert "\n" not in line and "adapter_model.safetensors" in line and "Traceback" not in line


def test_a_second_run_on_the_same_checkpoints_is_refused_and_force_takes_over(tmp_path: Path) -> None:
    ckpt = str(tmp_path / "ckpt")
    env = {**os.environ, "JOBRL_CHECKPOINTS__LEASE_TIMEOUT_S": "2"}  # renewed every 0.5 s
    cmd = [sys.executable, "-m", "jobrl_async", "run", "--dry-run", "--config", str(config_file(tmp_path)),
           "--checkpoints", ckpt]
    log = tmp_path / "first.jsonl"
    with log.open("wb") as out:
        first = subprocess.Popen([*cmd, "--max-steps", "40"], stdout=out, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 300
        while b"checkpoint_lease_acquired" not in log.read_bytes():
            assert first.poll() is None and time.monotonic() < deadline, "the first run never took the lease"
            time.sleep(0.1)

        second = subprocess.run([*cmd, "--max-steps", "40"], capture_output=True, timeout=300, cwd=tmp_path, env=env)
        assert second.returncode == 1
        line = second.stderr.decode().strip()
        assert "\n" not in line and "is in use by another run" in line and f"pid {first.pid}" in line
        assert "--force" in line and "Traceback" not in line

        forced = subprocess.run([*cmd, "--max-steps", "1", "--no-resume", "--force"], capture_output=True,
                                timeout=300, cwd=tmp_path, env=env)
        assert forced.returncode == 0, forced.stderr.decode()
        taken = [e for e in json_lines(forced.stdout) if e["event"] == "checkpoint_lease_taken_over"]
        assert [e["reason"] for e in taken] == ["forced"]

        _, err = first.communicate(timeout=120)  # it learns at its next renewal, and stops
        assert first.returncode == 1
        assert "another run took the checkpoints over" in err.decode().strip().splitlines()[-1]
    finally:
        first.kill()
        first.wait()
