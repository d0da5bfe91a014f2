"""Configuration: defaults, precedence (defaults < file < env < flags) and every error path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobrl_async.cli import config_from_args, build_parser
from jobrl_async.config import Config, Secrets, load_config, render_toml
from jobrl_async.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_are_the_seed_numbers() -> None:
    cfg = load_config(env={})
    assert cfg.data.validation_fraction == 0.1
    assert (cfg.training.batch_contexts, cfg.training.attempts) == (10, 10)
    assert cfg.training.max_policy_lag == 1
    assert (cfg.validation.attempts, cfg.validation.every_steps) == (2, 1)
    assert cfg.model.name == "google/gemma-3-270m-it"
    assert cfg.judge.mode == "llm"
    assert cfg.checkpoints.uri.startswith("s3://job-offer-generation/")
    assert not cfg.is_set("judge.rpm")


def test_precedence_file_env_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "[judge]\nrpm = 100\ntpm = 5000\n[training]\nattempts = 4\n")
    cfg = load_config(path, env={"JOBRL_JUDGE__RPM": "200", "JOBRL_TRAINING__ATTEMPTS": "6"},
                      overrides={"training.attempts": 8, "judge.mode": None})
    assert cfg.judge.tpm == 5000  # file only
    assert cfg.judge.rpm == 200  # env over file
    assert cfg.training.attempts == 8  # flag over env
    assert cfg.judge.mode == "llm"  # a None flag is "not given"
    assert cfg.sources["judge.tpm"] == "file"
    assert cfg.sources["judge.rpm"] == "env"
    assert cfg.sources["training.attempts"] == "flag"


def test_env_values_are_typed() -> None:
    cfg = load_config(env={
        "JOBRL_JUDGE__JSON_MODE": "false",
        "JOBRL_LORA__TARGET_MODULES": '["q_proj", "v_proj"]',
        "JOBRL_JUDGE__TIMEOUT_S": "5",
        "JOBRL_MODEL__NAME": "/models/gemma",
        "JOBRL_NOT_A_KEY": "ignored",  # no section separator: not ours
    })
    assert cfg.judge.json_mode is False
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.judge.timeout_s == 5.0 and isinstance(cfg.judge.timeout_s, float)
    assert cfg.model.name == "/models/gemma"


def test_comma_separated_list_from_env() -> None:
    cfg = load_config(env={"JOBRL_LORA__TARGET_MODULES": "q_proj, k_proj"})
    assert cfg.lora.target_modules == ["q_proj", "k_proj"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[trainng]\nattempts = 3\n", "unknown section 'trainng' (did you mean 'training'?)"),
        ("[training]\nbatch_size = 3\n", "unknown key 'training.batch_size'"),
        ("[training]\nbatch_context = 3\n", "did you mean 'training.batch_contexts'?"),
        ("[training]\nattempts = \"ten\"\n", "'training.attempts' must be an integer"),
        ("[training]\nattempts = 2.5\n", "'training.attempts' must be an integer"),
        ("[judge]\njson_mode = 1\n", "'judge.json_mode' must be true or false"),
        ("[judge]\nmode = \"gpt\"\n", "'judge.mode' must be one of 'llm', 'stub', 'hybrid'"),
        ("[data]\nvalidation_fraction = 0\n", "'data.validation_fraction' must be > 0.0"),
        ("[judge]\nrpm = -1\n", "'judge.rpm' must be >= 0"),
        ("[lora]\ntarget_modules = [1]\n", "'lora.target_modules' must be a list of a string"),
        ("judge = 3\n", "'judge' must be a table"),
        ("[judge\n", "is not valid TOML"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert message in str(e.value)
    assert str(path) in str(e.value)
    assert str(e.value).startswith("config: ")


def test_env_error_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="JOBRL_JUDGE__RPM: 'judge.rpm' must be an integer"):
        load_config(env={"JOBRL_JUDGE__RPM": "fast"})
    with pytest.raises(ConfigError, match="JOBRL_JUDGE__RPMS: unknown key 'judge.rpms'"):
        load_config(env={"JOBRL_JUDGE__RPMS": "1"})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file /nonexistent.toml does not exist"):
        load_config("/nonexistent.toml", env={})


def test_flags_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[judge]\nmode = \"llm\"\n[pipeline]\nmax_steps = 9\n")
    args = build_parser().parse_args(
        ["run", "--config", str(path), "--judge", "stub", "--max-steps", "3", "--no-resume",
         "--model", "tiny"]
    )
    cfg = config_from_args(args)
    assert cfg.judge.mode == "stub"
    assert cfg.pipeline.max_steps == 3
    assert cfg.pipeline.resume is False
    assert cfg.model.name == "tiny"
    assert cfg.is_set("model.name") and not cfg.is_set("data.dataset")


def test_render_toml_round_trips(tmp_path: Path) -> None:
    cfg = load_config(env={"JOBRL_JUDGE__RPM": "123"})
    text = render_toml(cfg)
    assert "rpm = 123  # env" in text
    again = load_config(write(tmp_path, text), env={})
    assert again.as_dict() == cfg.as_dict()


def test_digest_changes_with_the_config() -> None:
    a, b = load_config(env={}), load_config(env={"JOBRL_TRAINING__LEARNING_RATE": "0.001"})
    assert a.digest() == load_config(env={}).digest()
    assert a.digest() != b.digest()


def test_secrets_only_from_env_and_never_in_repr() -> None:
    s = Secrets.from_env({"AZURE_OPENAI_API_KEY": "az-secret-123", "AZURE_OPENAI_ENDPOINT": "https://x",
                          "AZURE_DEPLOYMENT_NAME": "gpt"})
    assert s.judge_backend == "azure"
    assert "az-secret-123" not in repr(s)
    assert Secrets.from_env({"OPENAI_API_KEY": "k"}).judge_backend == "openai"
    assert Secrets.from_env({}).judge_backend == "none"
    assert "api_key" not in {f for f in Config().as_dict()["judge"]}


def test_endpoint_urls_may_carry_passwords_so_repr_hides_them() -> None:
    from jobrl_async.config import secret_values

    env = {"OPENAI_BASE_URL": "https://svc:url-password-1@llm.internal/v1", "OPENAI_API_KEY": "sk-key-0001",
           "AZURE_OPENAI_ENDPOINT": "http://[not a url", "HUGGING_FACE_HUB_TOKEN": "hf_old_name_token",
           "AWS_SECURITY_TOKEN": "aws-old-session-token"}
    s = Secrets.from_env(env)
    assert "url-password-1" not in repr(s) and s.openai_base_url.endswith("@llm.internal/v1")
    assert sorted(secret_values(env)) == sorted(["sk-key-0001", "hf_old_name_token", "aws-old-session-token",
                                                 "url-password-1"])


def test_weight_syncs_rarer_than_the_staleness_bound_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[generator]\nbackend = \"vllm\"\nurls = [\"http://127.0.0.1:1\"]\nsync_every_steps = 3\n"
                    "[training]\nmax_policy_lag = 1\n")
    with pytest.raises(ConfigError, match=r"'generator.sync_every_steps' = 3 exceeds 'training.max_policy_lag' \+ 1 = 2"):
        load_config(path, env={})
    assert load_config(path, env={"JOBRL_TRAINING__MAX_POLICY_LAG": "2"}).generator.sync_every_steps == 3
    # through the command line: one line naming the key, exit 1
    r = subprocess.run([sys.executable, "-m", "jobrl_async", "config", "show", "--config", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "generator.sync_every_steps" in r.stderr and "Traceback" not in r.stderr


def test_a_removed_key_still_loads_and_is_named_in_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[lora]\nr = 8\ndropout = 0.1\n")
    cfg = load_config(path, env={})
    assert cfg.lora.r == 8 and not hasattr(cfg.lora, "dropout")
    assert "'lora.dropout' is no longer a setting" in cfg.removed["lora.dropout"]
    assert "dropout" not in cfg.as_dict()["lora"]
    assert load_config(env={"JOBRL_LORA__DROPOUT": "0.05"}).removed.keys() == {"lora.dropout"}
    r = subprocess.run([sys.executable, "-m", "jobrl_async", "config", "show", "--config", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (warning,) = [json.loads(line) for line in r.stderr.splitlines() if "config_key_removed" in line]
    assert warning["key"] == "lora.dropout" and "eval mode" in warning["reason"]


def test_an_endpoint_url_password_is_a_secret_and_a_key_pasted_as_api_key_env_is_never_echoed(tmp_path) -> None:
    from jobrl_async.ops import log

    path = tmp_path / "jobrl.toml"
    path.write_text('[[judge.endpoints]]\nname = "a"\nurl = "https://svc:endpoint-pw-4242@llm.internal/v1"\n'
                    'api_key_env = "POOL_KEY"\n')
    load_config(path, env={})
    log.refresh_secrets()
    assert log.redact("refused endpoint-pw-4242") == f"refused {log.REDACTED}"
    path.write_text('[[judge.endpoints]]\nname = "a"\nurl = "https://llm.internal/v1"\n'
                    'api_key_env = "sk-proj-pasted-by-mistake-0042"\n')
    with pytest.raises(ConfigError, match=r"'judge.endpoints\[0\].api_key_env' must be the NAME") as error:
        load_config(path, env={})
    assert "sk-proj-pasted" not in str(error.value)
    log.refresh_secrets()
    assert log.redact("key sk-proj-pasted-by-mistake-0042") == f"key {log.REDACTED}"
