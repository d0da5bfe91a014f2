"""The judge pool: routing (pure), endpoint resolution, and real calls to several local Chat
Completions servers with their own quotas (RPM and TPM over 1-s windows), both URL shapes."""

from __future__ import annotations

import asyncio
import re

import pytest

from jobrl_async.config import Config, EndpointConfig, JudgeConfig, Secrets
from jobrl_async.errors import ConfigError
from jobrl_async.judge.client import pool_endpoints
from jobrl_async.judge.pool import soonest
from jobrl_async.judge.probe import SAMPLE_CONTEXT, example_offer
from jobrl_async.judge.stage import Judge
from jobrl_async.ops import log
from jobrl_async.testing.fake_judge import FakeChatServer
from tests.support.judge_fixtures import DEPLOYMENT, FAKE_KEY
from tests.test_judge_stage import captured_logs, events  # noqa: F401 (a fixture)

OTHER_KEY = "sk-FAKE-second-endpoint-key-31b9f0-never-logged"


# ---------------------------------------------------------------- routing (pure)


def test_a_call_goes_where_it_can_start_soonest():
    assert soonest([(0, 0.3, 0.0), (1, 0.0, 0.9), (2, 0.1, 0.0)]) == 1
    assert soonest([(0, 0.0, 0.5), (1, 0.0, 0.2)]) == 1  # a tie: the least loaded
    assert soonest([(0, 0.2, 0.0), (1, 0.2, 0.0)]) == 0  # then the first listed
    assert soonest([]) is None  # every endpoint paused or full


# ---------------------------------------------------------------- resolving [[judge.endpoints]]


def endpoint(**fields) -> EndpointConfig:
    base = dict(name="a", kind="openai", url="http://127.0.0.1:1/v1", api_key_env="KEY_A", rpm=600, tpm=60_000)
    return EndpointConfig(**{**base, **fields})


@pytest.mark.parametrize(("fields", "message"), [
    ({"url": ""}, "'judge.endpoints[1].url' is required"),
    ({"kind": "azure", "deployment": ""}, "'judge.endpoints[1].deployment' is required"),
    ({"api_key_env": ""}, "'judge.endpoints[1].api_key_env' is required"),
    ({"api_key_env": "UNSET_KEY"}, "the environment variable UNSET_KEY is not set"),
    ({"name": "a"}, "'a' names two endpoints"),
])
def test_an_unusable_endpoint_is_one_line_naming_its_key(fields: dict, message: str):
    cfg = JudgeConfig(endpoints=[endpoint(), endpoint(**{"name": "b", **fields})])
    with pytest.raises(ConfigError, match=re.escape(message)):
        pool_endpoints(cfg, {"KEY_A": "k" * 10})


def test_endpoints_take_the_judge_defaults_and_never_show_their_key():
    cfg = JudgeConfig(model="gpt-4o-mini", api_version="2024-10-21",
                      endpoints=[endpoint(), endpoint(name="b", kind="azure", deployment="dep", api_key_env="KEY_B")])
    specs = pool_endpoints(cfg, {"KEY_A": "secret-a-123456", "KEY_B": "secret-b-123456"})
    assert [(s.name, s.kind, s.model, s.api_version) for s in specs] == [
        ("a", "openai", "gpt-4o-mini", "2024-10-21"), ("b", "azure", "dep", "2024-10-21")]
    assert "secret-a" not in repr(specs)


# ---------------------------------------------------------------- against several servers


def pool_config(servers: list[tuple[str, FakeChatServer]], rpm: int = 60_000, tpm: int = 10**8,
                **judge) -> Config:
    cfg = Config()
    cfg.judge.mode, cfg.judge.calls = "hybrid", "per_criterion"
    cfg.judge.timeout_s, cfg.judge.max_retries, cfg.judge.backoff_max_s = 2.0, 6, 0.05
    cfg.judge.breaker_failures, cfg.judge.probe_interval_s = 3, 0.05
    cfg.judge.endpoints = [
        EndpointConfig(name=f"ep{i}", kind=shape, url=s.azure_endpoint if shape == "azure" else s.openai_base_url,
                       deployment=DEPLOYMENT if shape == "azure" else "", model="" if shape == "azure" else DEPLOYMENT,
                       api_key_env=f"POOL_KEY_{i}", rpm=rpm, tpm=tpm)
        for i, (shape, s) in enumerate(servers)]
    for key, value in judge.items():
        setattr(cfg.judge, key, value)
    return cfg


def pool_env(n: int) -> dict[str, str]:
    return {f"POOL_KEY_{i}": FAKE_KEY if i == 0 else OTHER_KEY for i in range(n)}


@pytest.fixture
def two_servers():
    with FakeChatServer(api_key=FAKE_KEY, deployments=(DEPLOYMENT,)) as a, \
            FakeChatServer(api_key=OTHER_KEY, deployments=(DEPLOYMENT,)) as b:
        yield a, b


def offers(n: int) -> list[str]:
    return [example_offer(SAMPLE_CONTEXT) + f"\n<!-- {i} -->" for i in range(n)]  # distinct: no dedup


def admitted_per_s(servers: list[FakeChatServer]) -> float:
    arrivals = sorted(r.arrived for s in servers for r in s.requests if r.status == 200)
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


async def test_a_pool_of_two_uses_both_quotas(two_servers):
    a, b = two_servers
    for s in (a, b):
        s.rpm, s.latency_ms = 1200, 20  # 20 requests in any second each
    cfg = pool_config([("azure", a), ("openai", b)], rpm=1140)  # 95% of each quota, as README advises
    async with Judge(cfg, Secrets(), env=pool_env(2)) as judge:
        results = await asyncio.gather(*(judge.score(SAMPLE_CONTEXT, o) for o in offers(40)))
        per_endpoint = {name: s.requests for name, s in judge.endpoint_stats().items()}
    # A loaded machine's jitter costs a few 429s at these small quotas (the share at a real pace is
    # measured by `bench judge`); a client admitting far above the quota gets ~26 of ~80 refused.
    assert len(results) == 40 and a.http_429 + b.http_429 <= 12
    assert 0.35 <= len(a.requests) / 80 <= 0.65  # both shapes served their share
    assert per_endpoint == {"ep0": len(a.requests), "ep1": len(b.requests)}
    assert admitted_per_s([a, b]) > 1.1 * 20  # more than one quota could admit: the pool adds them up


async def test_one_endpoint_down_mid_run_changes_only_the_pace(two_servers, captured_logs):
    a, b = two_servers
    cfg = pool_config([("openai", a), ("openai", b)])
    async with Judge(cfg, Secrets(), env=pool_env(2)) as judge:
        first = await asyncio.gather(*(judge.score(SAMPLE_CONTEXT, o) for o in offers(10)))
        b.down = True
        during = await asyncio.gather(*(judge.score(SAMPLE_CONTEXT, o) for o in offers(30)[10:]))
        assert not judge.stats.paused and judge.stats.failures == 0  # no global pause, nothing failed
        b.down = False
        while judge.endpoint_stats()["ep1"].paused:  # the probe brings it back
            await asyncio.sleep(0.02)
        after = await asyncio.gather(*(judge.score(SAMPLE_CONTEXT, o) for o in offers(50)[30:]))
    assert all(v.reward > 0 for v in [*first, *during, *after])  # every offer scored, never a zero
    seen = events(captured_logs)
    names = [e["event"] for e in seen]
    assert "judge_failed" not in names
    paused = [e for e in seen if e["event"] == "judge_paused"]
    resumed = [e for e in seen if e["event"] == "judge_resumed"]
    assert [e["endpoint"] for e in paused] == ["ep1"] and [e["endpoint"] for e in resumed] == ["ep1"]
    assert any(r.status == 200 for r in b.requests[-5:])  # back in the rotation


async def test_every_endpoint_down_waits_and_resumes_without_failing(two_servers):
    a, b = two_servers
    cfg = pool_config([("openai", a), ("openai", b)], max_retries=20)
    async with Judge(cfg, Secrets(), env=pool_env(2)) as judge:
        a.down = b.down = True
        task = asyncio.create_task(judge.score(SAMPLE_CONTEXT, offers(1)[0]))
        while not all(s.paused for s in judge.endpoint_stats().values()):
            await asyncio.sleep(0.02)
        assert not task.done()  # intake waits while every endpoint is paused
        a.down = b.down = False
        verdict = await task
    assert verdict.reward > 0 and judge.stats.failures == 0


async def shared_quota_run(rate_headers: bool, n_offers: int) -> tuple[int, int]:
    """(429s, calls) for hybrid offers against a 1,800 RPM server that another client uses 30% of,
    while we are configured for all of it (at 95%, as the README advises: headroom for jitter)."""
    with FakeChatServer(api_key=FAKE_KEY, rpm=1800, latency_ms=10, rate_headers=rate_headers,
                        other_share=0.3) as s:
        cfg = pool_config([("openai", s)], rpm=1710, max_concurrency=8)
        async with Judge(cfg, Secrets(), env=pool_env(1)) as judge:
            await asyncio.gather(*(judge.score(SAMPLE_CONTEXT, o) for o in offers(n_offers)))
            return s.http_429, judge.stats.requests


async def test_the_server_headers_keep_429s_rare_on_a_shared_quota():
    """The remaining-* headers tell us what is left: fewer than 2% of our calls meet a 429."""
    http_429, calls = await shared_quota_run(rate_headers=True, n_offers=80)
    assert calls >= 160 and http_429 / calls < 0.02


async def test_without_the_headers_the_shared_quota_does_cost_429s():
    """The control: the same server without the headers refuses some of our calls (so the test
    above measures the headers, not an idle server); AIMD keeps it to a few."""
    http_429, calls = await shared_quota_run(rate_headers=False, n_offers=40)
    assert 0 < http_429 and http_429 / calls < 0.15


async def test_a_pool_of_two_tpm_quotas_in_one_call_per_offer(two_servers):
    a, b = two_servers
    for s in (a, b):
        s.tpm = 60 * 2_500  # 2,500 tokens in any second: ~2 per-offer calls
    # configured at 95% of each quota, as the README advises (a window may hold 2.5% over the rate)
    cfg = pool_config([("openai", a), ("azure", b)], tpm=60 * 2_375, calls="per_offer")
    async with Judge(cfg, Secrets(), env=pool_env(2)) as judge:
        await asyncio.gather(*(judge.score(SAMPLE_CONTEXT, o) for o in offers(8)))
        charged = judge.stats.charged_tokens
    assert len(a.requests) + len(b.requests) == 8 and a.http_429 + b.http_429 == 0
    assert charged == pytest.approx(a.charged_tokens + b.charged_tokens)
    assert a.requests and b.requests


async def test_different_models_are_warned_about_once_and_keys_are_redacted(two_servers, captured_logs):
    a, b = two_servers
    cfg = pool_config([("openai", a), ("openai", b)])
    cfg.judge.endpoints[1].model = "another-model"
    async with Judge(cfg, Secrets(), env=pool_env(2)) as judge:
        assert judge.pool.is_pool
        log.get_logger("test").info("leak_check", text=f"key {OTHER_KEY}")
    warnings = [e for e in events(captured_logs) if e["event"] == "judge_models_differ"]
    assert len(warnings) == 1 and warnings[0]["models"] == sorted([DEPLOYMENT, "another-model"])
    assert OTHER_KEY not in captured_logs.getvalue().decode()
