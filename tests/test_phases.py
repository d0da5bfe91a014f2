"""Phase lines on stderr: what a run's start is doing, each phase as it begins."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobrl_async.ops.phases import PhaseLines

from .test_run import config_file, json_lines


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_phase_is_said_once_as_it_begins() -> None:
    out, clock = io.StringIO(), Clock()
    phases = PhaseLines(out, clock)
    phases.loading("tiny")
    clock.now += 6.5
    phases({"event": "model_loaded", "parameters": 1_288_576, "device": "cpu"})
    phases({"event": "checkpoint_saved"})  # not a phase: nothing said
    phases({"event": "run_started", "model": "tiny", "device": "cpu", "batch_contexts": 10, "attempts": 10})
    clock.now += 20
    phases({"event": "step", "step": 1})
    phases({"event": "step", "step": 2})  # after the first step the progress line and the log take over
    assert out.getvalue().splitlines() == [
        "jobrl-async: loading torch, the dataset and the model 'tiny' (the tiny model: ~15 s on 2 cores)",
        "jobrl-async: model ready after 6.5 s (1.3M parameters on cpu)",
        "jobrl-async: first step: sampling 10 contexts x 10 offers, judging them, one optimizer step "
        "(tiny on a CPU: ~25 s)",
        "jobrl-async: first step done after 26.5 s; the JSON log is on stdout",
    ]


def test_no_usual_duration_is_claimed_for_other_models() -> None:
    out = io.StringIO()
    phases = PhaseLines(out, Clock())
    phases.loading("google/gemma-3-270m-it")
    phases({"event": "run_started", "model": "google/gemma-3-270m-it", "device": "cuda", "batch_contexts": 10,
            "attempts": 10})
    assert "~" not in out.getvalue()


@pytest.mark.parametrize(("setting", "tty", "wanted"), [
    ("auto", True, True), ("auto", False, False), ("on", False, True), ("off", True, False),
])
def test_phase_lines_by_default_only_on_a_terminal(setting: str, tty: bool, wanted: bool) -> None:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    assert PhaseLines.wanted(setting, Stream()) is wanted


@pytest.mark.slow
def test_a_dry_run_says_its_phases_on_stderr_and_keeps_stdout_json(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "jobrl_async", "run", "--dry-run", "--config", str(config_file(tmp_path)),
           "--checkpoints", str(tmp_path / "ckpt"), "--max-steps", "1"]
    r = subprocess.run(cmd, capture_output=True, cwd=tmp_path, timeout=300,
                       env={**os.environ, "JOBRL_LOGGING__PHASES": "on"})
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stderr.decode().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["loading", "model", "first", "first"], lines
    assert "M parameters on cpu" in lines[1] and "2 contexts x 4 offers" in lines[2]  # base + LoRA: 1.4M
    assert [e["event"] for e in json_lines(r.stdout)].count("step") == 1  # stdout: JSON only
