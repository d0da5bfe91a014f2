"""`run --dry-run --generator URL`: sampling on an OpenAI-compatible server with LoRA hot-load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobrl_async.config import load_config
from jobrl_async.fake_vllm import FakeVLLM, ModelSampler
from jobrl_async.model import load_policy

from .test_run import config_file, json_lines

pytestmark = pytest.mark.slow


@pytest.fixture
def engine(tiny_model_dir: Any) -> Any:
    """A fake vLLM whose samples come from the tiny model with the adapter each request names."""
    cfg = load_config(env={}, overrides={"model.name": "tiny"})
    policy = load_policy(cfg)
    with FakeVLLM(policy.tokenizer, model="tiny", sampler=ModelSampler(policy, cfg.generation)) as server:
        yield server


def run_remote(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobrl_async", "run", "--dry-run", "--config", str(config_file(tmp_path)),
           "--checkpoints", str(tmp_path / "ckpt"), "--generator", url, *extra]
    return subprocess.run(cmd, capture_output=True, timeout=300, cwd=tmp_path)


def test_dry_run_samples_remotely_and_hot_loads_each_step(tmp_path: Path, engine: FakeVLLM) -> None:
    r = run_remote(tmp_path, engine.url, "--max-steps", "2")
    assert r.returncode == 0, r.stderr.decode()
    events = json_lines(r.stdout)
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2]
    assert [name for name, _ in engine.loads] == ["policy-v1", "policy-v2"]  # after each step
    served = {req.body["model"] for req in engine.completions()}
    assert {"tiny", "policy-v1"} <= served  # step 2 was sampled (at least partly) with the new adapter
    mismatch = [e["logprob_mismatch"] for e in steps]
    assert mismatch[0] is not None and mismatch[0] < 1e-3, mismatch  # step 1: sampled by v0, learned at v0


def test_adapter_load_failures_are_retried_then_surfaced(tmp_path: Path, engine: FakeVLLM) -> None:
    engine.inject("500", times=2, route="load")  # two failures: retried, the run goes on
    ok = run_remote(tmp_path, engine.url, "--max-steps", "1")
    assert ok.returncode == 0, ok.stderr.decode()
    engine.inject("500", times=1000, route="load")  # a server that never loads: one clear line, exit 1
    (tmp_path / "again").mkdir()
    bad = run_remote(tmp_path / "again", engine.url, "--max-steps", "2")
    assert bad.returncode == 1
    line = bad.stderr.decode().strip()
    assert "\n" not in line and "policy-v1" in line and "Traceback" not in line
