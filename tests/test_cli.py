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


def test_config_show_redacts_url_credentials_and_explains_bundled() -> None:
    import tomllib

    r = jobrl("config", "show", env={"JOBRL_GENERATOR__URLS": '["http://bob:gen-pass-4242@gpu:8000"]',
                                     "OPENAI_BASE_URL": "https://svc:judge-pass-4242@llm.internal/v1"})
    assert r.returncode == 0, r.stderr
    assert "gen-pass-4242" not in r.stdout + r.stderr and "judge-pass-4242" not in r.stdout + r.stderr
    assert 'urls = ["http://[REDACTED]@gpu:8000"]  # env' in r.stdout
    assert 'OPENAI_BASE_URL = "https://[REDACTED]@llm.internal/v1"' in r.stdout
    assert ('dataset = "bundled"  # the dataset shipped in the package; to train on the seed\'s: '
            "s3://job-offer-generation/datasets/job_offer_dataset.json") in r.stdout
    assert tomllib.loads(r.stdout)["data"]["dataset"] == "bundled"  # still TOML


CRASH = """
import sys
import jobrl_async.commands.data as data
from jobrl_async import cli

def broken(args, cfg):
    raise RuntimeError("state went bad\\nkey=sk-crash-secret-777 at https://u:url-secret-888@h/")

data.check = broken
sys.exit(cli.main(["data", "check"]))
"""


def test_an_unexpected_error_is_one_redacted_line_and_a_logged_traceback() -> None:
    r = subprocess.run([sys.executable, "-c", CRASH], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OPENAI_API_KEY": "sk-crash-secret-777"})
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr == ("jobrl-async: unexpected error: RuntimeError: state went bad key=[REDACTED] at "
                        "https://[REDACTED]@h/ (traceback in the log)\n")
    (event,) = [orjson.loads(line) for line in r.stdout.splitlines()]  # `data check` logs on stdout
    assert event["event"] == "unexpected_error" and event["level"] == "error"
    assert "Traceback" in event["exception"] and "in broken" in event["exception"]
    assert "sk-crash-secret-777" not in r.stdout and "url-secret-888" not in r.stdout


def test_run_refuses_a_dataset_holding_a_token_of_the_models_tokenizer(tmp_path: Path) -> None:
    # "<skill>" is no Gemma chat token (the load accepts it) but an added token of the tiny model's
    # tokenizer: found once the policy is loaded, before any step.
    path = tmp_path / "d.jsonl"
    records = [{"context": {"job_title": f"Chef {i}", "language": "fr", "skills": ["Cuisine", "Sauces"]}} for i in range(12)]
    records[9]["context"]["skills"][1] = "Sauces <skill>"
    path.write_text("\n".join(orjson.dumps(r).decode() for r in records))
    r = jobrl("run", "--dry-run", "--dataset", str(path), "--checkpoints", str(tmp_path / "ckpt"), "--max-steps", "1")
    assert r.returncode == 1
    assert r.stderr == (
        f"jobrl-async: data: {path}: record 9: skills[1] holds '<skill>', an added token of the model's "
        "tokenizer (dataset text must be plain text)\n")
    assert '"event":"step"' not in r.stdout
