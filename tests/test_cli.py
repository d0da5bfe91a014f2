"""The command line as users run it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from jobrl_async import __version__


def jobrl(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "jobrl_async", *args], capture_output=True,
                          text=True, env=full_env, timeout=120)


def test_version() -> None:
    r = jobrl("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"jobrl-async {__version__}"


def test_usage_errors_exit_2() -> None:
    assert jobrl("frobnicate").returncode == 2
    assert jobrl("run", "--max-steps", "many").returncode == 2
    assert jobrl("judge", "score").returncode == 2  # --context and --offer are required


def test_bad_config_is_one_line_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[training]\nbatch_sise = 10\n")
    r = jobrl("config", "show", "--config", str(bad))
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0
    assert "unknown key 'training.batch_sise'" in r.stderr and "Traceback" not in r.stderr


def test_config_show_redacts_secrets() -> None:
    r = jobrl("config", "show", env={"AZURE_OPENAI_API_KEY": "az-super-secret-1",
                                     "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com",
                                     "AZURE_DEPLOYMENT_NAME": "gpt-35", "JOBRL_JUDGE__RPM": "60"})
    assert r.returncode == 0, r.stderr
    assert "az-super-secret-1" not in r.stdout + r.stderr
    assert 'AZURE_OPENAI_API_KEY = "[set, redacted]"' in r.stdout
    assert 'judge_backend = "azure"' in r.stdout
    assert "rpm = 60  # env" in r.stdout


def test_data_count_bundled_prints_the_split() -> None:
    r = jobrl("data", "count")
    assert r.returncode == 0, r.stderr
    stats = orjson.loads(r.stdout.strip().splitlines()[-1])  # piped: JSON
    assert (stats["entries"], stats["train"], stats["validation"]) == (534, 481, 53)
    assert set(stats["languages"]) == {"en", "fr"}


def test_data_check_names_the_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"context": {"job_title": "Chef", "language": "fr", "skills": ["Cuisine"]}}\n'
                    '{"context": {"job_title": "Nurse", "language": "de", "skills": ["Care"]}}\n')
    r = jobrl("data", "check", "--dataset", str(path))
    assert r.returncode == 1
    assert r.stderr.strip() == f"jobrl-async: data: {path}: record 1: language must be one of en, fr, got 'de'"
    assert jobrl("data", "check").returncode == 0
