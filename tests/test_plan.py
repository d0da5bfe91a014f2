"""`jobrl-async plan`: the arithmetic on hand-made numbers, and the command on the real prompts."""

from __future__ import annotations


import orjson
import pytest

from jobrl_async.cli import main
from jobrl_async.commands.plan import PlanInputs, plan_figures, render_table, tokens_per_offer
from jobrl_async.config import Config
from jobrl_async.data import load_bundled
from jobrl_async.judge.probe import example_offer
from jobrl_async.judge.prompts import build_messages, estimate_tokens


def inputs(**overrides) -> PlanInputs:
    base = dict(calls_per_offer=5, tokens_per_offer=4_000.0, train_offers=100, validation_offers=100,
                validation_every=1, rpm=6_000, tpm=1_000_000, concurrency=32, latency_s=0.8,
                n_train=481, batch_contexts=10, epochs=3, max_steps=0)
    return PlanInputs(**{**base, **overrides})


def test_the_binding_limit_sets_the_judge_time():
    f = plan_figures(inputs())
    # 200 offers x 5 calls = 1,000 calls; x 4,000 tokens / 5 ... = 800,000 tokens per step
    assert f["per_step"]["calls"] == 1000 and f["per_step"]["tokens"] == 800_000
    assert f["per_step"]["bounds_s"] == {"rpm": 10.0, "tpm": 48.0, "concurrency": 25.0}
    assert f["binding_limit"] == "tpm" and f["per_step"]["judge_s"] == 48.0
    assert f["steps_per_epoch"] == 48 and f["run"]["steps"] == 144  # 481 // 10 full batches x 3
    assert f["run"]["tokens"] == 800_000 * 144 and f["run"]["judge_hours"] == round(48 * 144 / 3600, 2)


def test_validation_every_n_steps_is_spread_over_them():
    f = plan_figures(inputs(validation_every=5, calls_per_offer=1, tokens_per_offer=1_000.0))
    assert f["per_step"]["offers"] == 120 and f["per_step"]["tokens"] == 120_000
    assert plan_figures(inputs(validation_every=0))["per_step"]["offers"] == 100  # never validated


def test_concurrency_or_rpm_can_bind_too():
    assert plan_figures(inputs(latency_s=5.0))["binding_limit"] == "concurrency"
    assert plan_figures(inputs(rpm=600, tpm=10**9))["binding_limit"] == "rpm"
    assert plan_figures(inputs(max_steps=10))["run"]["steps"] == 10


def test_tokens_per_offer_are_the_real_prompts_charge():
    contexts = load_bundled()[:3]
    cfg = Config()
    expected = sum(estimate_tokens(build_messages(n, c, example_offer(c)), 200)
                   for c in contexts for n in ("language_consistency", "xml_format", "context_inclusion",
                                               "skill_relevance", "skill_completeness")) / 3
    # auto assumes a reasoning model: 64 reasoning tokens reserved per call at effort minimal
    assert tokens_per_offer(cfg, contexts) == pytest.approx(expected + 5 * 64)
    cfg.judge.dialect = "classic"
    assert tokens_per_offer(cfg, contexts) == pytest.approx(expected)
    cfg.judge.mode, cfg.judge.calls = "hybrid", "per_offer"
    one_call = tokens_per_offer(cfg, contexts)
    assert 0 < one_call < expected / 3  # the offer once, two criteria, one max_tokens


def run_plan(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> dict:
    code = main(["plan", *args])
    assert code == 0
    return orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_plan_prints_one_json_object_when_piped(monkeypatch, capsys):
    seed = run_plan(monkeypatch, capsys)
    assert {"per_step", "binding_limit", "steps_per_epoch", "run"} <= set(seed)
    assert {"calls", "tokens", "judge_s"} <= set(seed["per_step"]) and {"steps", "tokens", "judge_hours"} <= set(seed["run"])
    assert seed["per_step"]["calls"] == 206 * 5  # 10 x 10 training + 53 x 2 validation offers, 5 calls each
    monkeypatch.setenv("JOBRL_JUDGE__MODE", "hybrid")
    monkeypatch.setenv("JOBRL_JUDGE__CALLS", "per_offer")
    monkeypatch.setenv("JOBRL_VALIDATION__EVERY_STEPS", "5")
    lean = run_plan(monkeypatch, capsys)
    assert lean["per_step"]["calls"] == pytest.approx(100 + 106 / 5, abs=0.1)
    assert lean["per_step"]["tokens"] < 0.2 * seed["per_step"]["tokens"]


def test_the_table_names_the_binding_limit():
    f = {**plan_figures(inputs()), "settings": {"mode": "llm", "calls": "per_criterion", "max_tokens": 200,
                                                 "rpm": 6000, "tpm": 1e6, "concurrency": 32, "endpoints": ["a"],
                                                 "latency_ms": 800, "epochs": 3}}
    table = render_table(f)
    assert "bound by tpm" in table and "48.0 s/step" in table and "144 steps" in table


def test_a_pool_sums_its_quotas(tmp_path, monkeypatch, capsys):
    config = tmp_path / "pool.toml"
    config.write_text('[[judge.endpoints]]\nname = "a"\nkind = "openai"\nurl = "http://127.0.0.1:1/v1"\n'
                      'api_key_env = "A"\nrpm = 1000\ntpm = 100000\n'
                      '[[judge.endpoints]]\nname = "b"\nkind = "openai"\nurl = "http://127.0.0.1:2/v1"\n'
                      'api_key_env = "B"\nrpm = 2000\ntpm = 300000\n')
    f = run_plan(monkeypatch, capsys, "--config", str(config))
    assert (f["settings"]["rpm"], f["settings"]["tpm"]) == (3000, 400_000)
    assert f["settings"]["concurrency"] == 64


