"""The judge's counters in a real in-process run (tiny model, the fake judge): the `step` event's
`judge` object, and the per-endpoint figures of `/metrics`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from jobrl_async.judge.client import JudgeStats
from jobrl_async.ops.metrics import RunMetrics
from jobrl_async.pipeline.daemon import log_run_summary
from jobrl_async.testing.fake_judge import FakeChatServer
from tests.support.judge_fixtures import FAKE_KEY
from tests.test_pipeline import events, make_pipeline, small_config  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow


async def test_each_step_reports_its_judge_calls_tokens_429s_and_dedup_hits(
        tmp_path: Path, events: list, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeChatServer(api_key=FAKE_KEY, rpm=60_000, tpm=60 * 200_000) as server:
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
        for var in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_DEPLOYMENT_NAME"):
            monkeypatch.delenv(var, raising=False)
        cfg = small_config(tmp_path / "ckpt", **{"judge.mode": "hybrid", "judge.calls": "per_offer",
                                                "pipeline.max_steps": 2, "validation.every_steps": 0,
                                                "generation.max_new_tokens": 48})
        pipeline = await make_pipeline(cfg, tmp_path)
        server.inject("429", retry_after_ms=50)  # after the start-up check: in step 1's judging
        await pipeline.run()
        log_run_summary(pipeline, None)
        await pipeline.parts.judge.aclose()
        await asyncio.sleep(0)
    steps = [e for e in events.refresh() if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2]
    judged = [e["judge"] for e in steps]
    # no prices configured: no `usd`; a classic model reasons not, and prompts this short are not cached
    assert all(set(j) == {"calls", "tokens", "http_429", "dedup_hits", "reasoning_tokens", "cached_tokens"}
               for j in judged)
    assert all(j["reasoning_tokens"] == 0 and j["cached_tokens"] == 0 for j in judged)
    total = {k: sum(j[k] for j in judged) for k in judged[0]}
    offers = sum(e["trajectories"]["scored"] + e["trajectories"]["judge_failed"] for e in steps)
    assert total["calls"] + total["dedup_hits"] >= offers - 1  # one call per offer; a 429 adds a retry
    assert total["http_429"] == 1 and total["calls"] <= len(server.requests)
    assert 0 < total["tokens"] <= server.charged_tokens + 1  # as the server charged at intake
    (summary,) = [e for e in events if e["event"] == "run_summary"]
    # the run's totals: every step's judging plus the start-up check's one call
    assert summary["judge"]["calls"] == total["calls"] + 1 == len(server.requests)
    assert summary["judge"]["tokens"] == pytest.approx(server.charged_tokens, abs=1)


def test_metrics_have_per_endpoint_figures() -> None:
    metrics = RunMetrics(stall_timeout_s=600)
    a, b = JudgeStats(requests=10, charged_tokens=5_000, http_429=1), JudgeStats(requests=4, paused=True, removed=True)
    metrics.on_judge_endpoints({"sweden": a, "east": b})
    a.requests = 15
    metrics.on_judge_endpoints({"sweden": a, "east": b})
    text = generate_latest(metrics.registry).decode()
    assert 'jobrl_judge_requests_by_endpoint_total{endpoint="sweden"} 15.0' in text
    assert 'jobrl_judge_tokens_charged_by_endpoint_total{endpoint="sweden"} 5000.0' in text
    assert 'jobrl_judge_http_429_by_endpoint_total{endpoint="sweden"} 1.0' in text
    assert 'jobrl_judge_endpoint_paused{endpoint="east"} 1.0' in text
    assert 'jobrl_judge_endpoint_removed{endpoint="east"} 1.0' in text  # out for good (issue 28)
    assert 'jobrl_judge_endpoint_removed{endpoint="sweden"} 0.0' in text
    assert "jobrl_judge_requests_total 0.0" in text  # the existing totals keep their names
