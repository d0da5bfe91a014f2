"""The W&B sink: off without a key, real wandb in offline mode when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobrl_async.config import Secrets, load_config
from jobrl_async.ops.tracking import WandbSink, _flatten


def test_off_without_a_key() -> None:
    assert WandbSink.start(load_config(env={}), Secrets()) is None
    assert WandbSink.start(load_config(env={"JOBRL_WANDB__MODE": "disabled"}), Secrets(wandb_api_key="k")) is None


def test_flatten_keeps_numbers_only() -> None:
    fields = {"step": 3, "reward_mean": 7.5, "busy": {"judge": 0.5}, "event": "step", "kl": None, "ok": True}
    assert _flatten(fields) == {"step": 3, "reward_mean": 7.5, "busy/judge": 0.5}


def test_offline_run_logs_step_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = load_config(env={"JOBRL_WANDB__MODE": "offline"})
    sink = WandbSink.start(cfg, Secrets(), directory=str(tmp_path))
    assert sink is not None
    sink.log_step({"step": 1, "reward_mean": 4.0, "busy": {"judge": 0.25}})
    sink.log_step({"step": 2, "reward_mean": 5.5, "busy": {"judge": 0.5}})
    assert sink.run.summary["reward_mean"] == 5.5
    assert sink.run.summary["busy/judge"] == 0.5
    assert sink.run.config["training"]["batch_contexts"] == 10
    sink.finish()
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))


def test_url_credentials_never_reach_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = load_config(env={"JOBRL_WANDB__MODE": "offline",
                           "JOBRL_GENERATOR__URLS": '["http://bob:wandb-leak-1234@gpu:8000"]'})
    sink = WandbSink.start(cfg, Secrets(), directory=str(tmp_path))
    assert sink is not None
    assert sink.run.config["generator"]["urls"] == ["http://[REDACTED]@gpu:8000"]
    sink.finish()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and not any(b"wandb-leak-1234" in p.read_bytes() for p in files)
