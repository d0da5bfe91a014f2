"""`run --dry-run --generator URL`: sampling on an OpenAI-compatible server with LoRA hot-load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobrl_async.config import load_config
from jobrl_async.policy.model import load_policy
from jobrl_async.testing.fake_vllm import FakeVLLM
from jobrl_async.testing.samplers import ModelSampler

from .test_run import config_file, json_lines

pytestmark = pytest.mark.slow


@pytest.fixture
def engine(tiny_model_dir: Any) -> Any:
    """A fake vLLM whose samples come from the tiny model with the adapter each request names."""
    cfg = load_config(env={}, overrides={"model.name": "tiny"})
    policy = load_policy(cfg)
    with FakeVLLM(policy.tokenizer, model="tiny", sampler=ModelSampler(policy, cfg.generation)) as server:
        yield server


def run_remote(tmp_path: Path, url: str, *extra: str, config: str = "") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobrl_async", "run", "--dry-run", "--config", str(config_file(tmp_path, config)),
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
    # the decoupled loss's importance weight: near 1 where the engine agrees with the trainer
    assert all(abs(e["tis_weight_mean"] - 1.0) < 0.05 for e in steps), [e["tis_weight_mean"] for e in steps]
    assert all(e["ratio_max"] == 1.0 for e in steps)


def test_adapter_load_failures_are_retried(tmp_path: Path, engine: FakeVLLM) -> None:
    engine.inject("500", times=2, route="load")  # two failures: retried, the run goes on
    ok = run_remote(tmp_path, engine.url, "--max-steps", "1")
    assert ok.returncode == 0, ok.stderr.decode()
    assert engine.loads and engine.loads[0][0] == "policy-v1"


def test_a_server_down_for_a_while_pauses_the_run_which_then_completes(
    tmp_path: Path, engine: FakeVLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Completions fail at the start of the run, then the adapter of step 1 will not load: each
    # outage outlasts the retries (max_retries = 1), pauses generation and is probed until it ends.
    engine.inject("500", times=4)
    engine.inject("500", times=4, route="load")
    # max_policy_lag = 0: step 2 is sampled only from step 1's adapter, so the run needs the
    # server back after the second outage (with a lag of 1, step 2 may be sampled from the base
    # model before that outage, and the run may end while the probe still waits)
    monkeypatch.setenv("JOBRL_TRAINING__MAX_POLICY_LAG", "0")
    r = run_remote(tmp_path, engine.url, "--max-steps", "2",
                   config="[generator]\nmax_retries = 1\nbackoff_max_s = 0.2\n")
    assert r.returncode == 0, r.stderr.decode()
    events = json_lines(r.stdout)
    names = [e["event"] for e in events]
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]
    paused = [e for e in events if e["event"] == "generator_paused"]
    assert len(paused) == 2 and names.count("generator_resumed") == 2, [n for n in names if n.startswith("generator")]
    assert paused[0]["reason"].startswith("2 attempts in a row failed, the last: HTTP 500")
    assert paused[1]["reason"].startswith("adapter policy-v1 from ") and "HTTP 500" in paused[1]["reason"]
    assert all(e["server"] == engine.url.removeprefix("http://") for e in paused)
    (summary,) = [e for e in events if e["event"] == "run_summary"]
    trajectories = summary["trajectories"]
    assert trajectories["dropped"] == 0 and trajectories["judge_failed"] == 0
    assert trajectories["scored"] == 2 * (2 * 4 + 2 * 2)  # 2 steps x (2 contexts x 4 + 2 validation x 2)
    assert [name for name, _ in engine.loads] == ["policy-v1", "policy-v2"]  # v1 by the probe, once it took it


def test_a_resumed_run_samples_from_its_adapter_from_the_first_step(tmp_path: Path, engine: FakeVLLM) -> None:
    # weights sync every 2 steps: the run stops at version 3, which was never published
    config = "[generator]\nsync_every_steps = 2\n"
    first = run_remote(tmp_path, engine.url, "--max-steps", "3", config=config)
    assert first.returncode == 0, first.stderr.decode()
    assert [name for name, _ in engine.loads] == ["policy-v2"]
    sent_before = len(engine.completions())

    resumed = run_remote(tmp_path, engine.url, "--max-steps", "4", config=config)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert [e["step"] for e in json_lines(resumed.stdout) if e["event"] == "resumed"] == [3]
    assert [name for name, _ in engine.loads] == ["policy-v2", "policy-v3", "policy-v4"]
    served = {req.body["model"] for req in engine.completions()[sent_before:]}
    assert served == {"policy-v3"}  # step 4 and its validation: the resumed adapter, never the base model
