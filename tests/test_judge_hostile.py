"""The judge at real latency and against hostile servers (issue 28), over real HTTP: the fake
judge with 1-2 s latency, rate-limit headers computed when it answers, absurd headers, 429
storms, revoked keys and one endpoint failing at a time."""

from __future__ import annotations

import asyncio
import time

import pytest

from jobrl_async.config import Config, JudgeConfig, Secrets
from jobrl_async.errors import ConfigError, JudgeError
from jobrl_async.judge.limiter import VIEW_LIFE_WINDOWS
from jobrl_async.judge.probe import SAMPLE_CONTEXT, example_offer
from jobrl_async.judge.prompts import build_messages
from jobrl_async.judge.stage import Judge, JudgeFailed
from jobrl_async.ops.log import host_of
from jobrl_async.testing.fake_judge import FakeChatServer, intake_tokens
from tests.support.judge_fixtures import DEPLOYMENT, FAKE_KEY
from tests.test_judge_client import OneEndpoint, secrets_for
from tests.test_judge_pool import offers, pool_config, pool_env, two_servers  # noqa: F401 (a fixture)
from tests.test_judge_reasoning import config
from tests.test_judge_stage import captured_logs, events  # noqa: F401 (a fixture)

MESSAGES = build_messages("skill_relevance", SAMPLE_CONTEXT, example_offer(SAMPLE_CONTEXT))
ANSWER = {"answer": "YES", "score": 7, "missing_skills": [], "irrelevant_skills": []}


def client_for(server: FakeChatServer, **judge) -> OneEndpoint:
    return OneEndpoint(config(**judge), secrets_for(server, "openai"))


def one_call_tokens() -> float:
    """What the fake charges one per-criterion call at intake (prompt + max_tokens)."""
    return intake_tokens({"messages": MESSAGES, "max_tokens": JudgeConfig().max_tokens})


# ---------------------------------------------------------------- item 1: headers at real latency


async def test_following_the_headers_at_1_5_s_latency_keeps_the_whole_quota():
    """Headers reported when the server answers, 1.5 s after the call arrived: anchored at the
    send (before issue 28) the client counted the calls sent meanwhile twice and paced to half
    its quota. Now it sends at the configured 95%, with no 429."""
    per_call = one_call_tokens()
    server_tpm = 60 * 6 * per_call  # 6 calls in any second
    with FakeChatServer(api_key=FAKE_KEY, latency_ms=1500, tpm=server_tpm, rate_headers=True) as server:
        async with client_for(server, tpm=int(server_tpm * 0.95), max_concurrency=32) as client:
            await asyncio.gather(*(client.ask("skill_relevance", MESSAGES) for _ in range(40)))
    arrivals = sorted(r.arrived for r in server.requests)
    steady = [t for t in arrivals if t >= arrivals[0] + 1.0]  # past the first window's burst
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    assert rate >= 0.85 * 6 * 0.95, f"{rate:.2f} calls/s"  # before issue 28: about half
    assert server.http_429 == 0


# ---------------------------------------------------------------- item 3: a 429 leaves no phantom


async def test_a_burst_of_429s_leaves_no_charge_in_the_limiter():
    with FakeChatServer(api_key=FAKE_KEY, answers={"skill_relevance": ANSWER}) as server:
        server.inject("429", times=3, retry_after_ms=10)
        async with client_for(server) as client:
            verdict = await client.ask("skill_relevance", MESSAGES)
    lim = client.limiter
    assert verdict.score == 7 and server.http_429 == 3 and len(server.requests) == 4
    # only the admitted call is charged: the three refused ones left the windows and the pace
    assert sum(a.cost for a in lim.requests.log) == 1
    assert sum(a.cost for a in lim.tokens.log) == pytest.approx(server.charged_tokens)


async def test_the_json_mode_fallback_refused_with_a_429_leaves_no_charge_either():
    """Without JSON mode the server answers 400, the client asks again without it under the
    same lease, and that second request meets a 429: the one lease is settled to nothing."""
    with FakeChatServer(api_key=FAKE_KEY, answers={"skill_relevance": ANSWER}, reject_json_mode=True) as server:
        server.inject("429", times=1, retry_after_ms=10)
        async with client_for(server) as client:
            verdict = await client.ask("skill_relevance", MESSAGES)
    assert verdict.score == 7 and [r.status for r in server.requests] == [400, 429, 200]
    assert sum(a.cost for a in client.limiter.tokens.log) == pytest.approx(server.charged_tokens)


# ---------------------------------------------------------------- item 4: 429s are pacing


async def test_offers_failed_only_by_429s_never_pause_a_single_endpoint_judge(captured_logs):
    """A quota shared with another client: 429s on every call. The offers fail (judge_failed,
    never a zero), but the breaker stays closed: the judge does not pause itself."""
    with FakeChatServer(api_key=FAKE_KEY, deployments=(DEPLOYMENT,)) as server:
        server.inject("429", times=1000, retry_after_ms=10)
        cfg = Config()
        cfg.judge.mode, cfg.judge.calls = "hybrid", "per_offer"
        cfg.judge.rpm, cfg.judge.tpm, cfg.judge.max_retries, cfg.judge.backoff_max_s = 60_000, 10**8, 1, 0.01
        cfg.judge.breaker_failures = 2
        async with Judge(cfg, Secrets(openai_api_key=FAKE_KEY, openai_base_url=server.openai_base_url)) as judge:
            for offer in offers(4):
                with pytest.raises(JudgeFailed, match="HTTP 429"):
                    await judge.score(SAMPLE_CONTEXT, offer)
            assert not judge.stats.paused and judge.stats.failures == 4
    assert "judge_paused" not in [e["event"] for e in events(captured_logs)]


# ---------------------------------------------------------------- item 5: one endpoint refused


async def test_an_endpoint_whose_key_is_revoked_mid_run_leaves_the_pool(two_servers, captured_logs):
    a, b = two_servers
    cfg = pool_config([("openai", a), ("azure", b)])
    async with Judge(cfg, Secrets(), env=pool_env(2)) as judge:
        first = await asyncio.gather(*(judge.score(SAMPLE_CONTEXT, o) for o in offers(10)))
        b.api_key = "sk-rotated-by-the-admin"  # every call to b is a 401 from now on
        after = await asyncio.gather(*(judge.score(SAMPLE_CONTEXT, o) for o in offers(30)[10:]))
        stats = judge.endpoint_stats()
        assert judge.stats.failures == 0 and stats["ep1"].removed and not stats["ep0"].removed
    assert all(v.reward > 0 for v in [*first, *after])
    removed = [e for e in events(captured_logs) if e["event"] == "judge_endpoint_removed"]
    assert [(e["endpoint"], e["endpoints_left"]) for e in removed] == [("ep1", 1)]
    assert "HTTP 401" in removed[0]["reason"] and "POOL_KEY_1" in removed[0]["reason"]
    refused = [r.arrived for r in b.requests if r.status == 401]
    assert refused[-1] - refused[0] < 0.5  # only the calls already on their way: then b is out


async def test_every_endpoint_refused_by_its_probe_ends_the_call_instead_of_stalling(two_servers):
    """Both endpoints paused by 500s, then their probes meet 401s: before issue 28 both stayed
    paused with no probe and the router polled forever."""
    a, b = two_servers
    cfg = pool_config([("openai", a), ("openai", b)], max_retries=50, breaker_failures=2)
    async with Judge(cfg, Secrets(), env=pool_env(2)) as judge:
        a.down = b.down = True
        task = asyncio.create_task(judge.score(SAMPLE_CONTEXT, offers(1)[0]))
        while not all(s.paused for s in judge.endpoint_stats().values()):
            await asyncio.sleep(0.02)
        a.api_key = b.api_key = "sk-revoked"
        a.down = b.down = False
        with pytest.raises(JudgeError, match="HTTP 401"):
            await asyncio.wait_for(task, timeout=10)
        assert all(s.removed for s in judge.endpoint_stats().values())


# ---------------------------------------------------------------- item 6: the right endpoint, the right catch


async def test_a_failure_names_the_endpoint_that_met_it(two_servers):
    a, b = two_servers
    a.down = True  # 500s from the first endpoint
    b.inject("503", times=100)  # 503s from the second
    cfg = pool_config([("openai", a), ("openai", b)], max_retries=1, breaker_failures=100, calls="per_offer")
    async with Judge(cfg, Secrets(), env=pool_env(2)) as judge:
        with pytest.raises(JudgeFailed) as failed:
            await judge.score(SAMPLE_CONTEXT, offers(1)[0])
    # the first attempt met a's 500, the retry avoided a and met b's 503: the last word is b's
    assert failed.value.reason.startswith(f"HTTP 503 from {host_of(b.url)}")


async def test_a_key_no_http_header_can_carry_is_one_line_before_any_call():
    """Before issue 28 the send-side UnicodeEncodeError (a ValueError) was caught as a malformed
    reply: retried, and at preflight an endless probe."""
    with FakeChatServer(api_key=FAKE_KEY) as server:
        secrets = Secrets(openai_api_key="sk-clé-collée-avec-accents", openai_base_url=server.openai_base_url)
        with pytest.raises(ConfigError, match="OPENAI_API_KEY holds a character") as error:
            Judge(Config(), secrets)
    assert "clé" not in str(error.value) and server.requests == []


# ---------------------------------------------------------------- item 8: reset headers


@pytest.mark.parametrize("reset", ["99999h", "1e9", "9" * 400 + "s"])
async def test_an_absurd_reset_header_holds_an_endpoint_a_few_windows_at_most(reset: str):
    with FakeChatServer(api_key=FAKE_KEY, header_overrides={"x-ratelimit-remaining-tokens": "0",
                                                            "x-ratelimit-reset-tokens": reset}) as server:
        async with client_for(server) as client:
            started = time.monotonic()
            await asyncio.wait_for(client.ask("skill_relevance", MESSAGES), timeout=10)
            await asyncio.wait_for(client.ask("skill_relevance", MESSAGES), timeout=10)  # before: years
            took = time.monotonic() - started
    assert took <= VIEW_LIFE_WINDOWS * client.limiter.window_s + 2.0 and len(server.requests) == 2


# ---------------------------------------------------------------- item 10: duplicate keys


async def test_a_per_criterion_reply_giving_a_key_twice_is_refused_and_asked_again():
    with FakeChatServer(api_key=FAKE_KEY, answers={"skill_relevance": ANSWER}) as server:
        server.inject("duplicate_keys")  # {"answer": "NO", "score": 1, "answer": "YES", "score": 10}
        async with client_for(server) as client:
            verdict = await client.ask("skill_relevance", MESSAGES)
    assert (verdict.answer, verdict.score) == ("YES", 7)  # never the duplicate's last 10
    assert len(server.requests) == 2 and client.stats.retries == 1



# ---------------------------------------------------------------- item 2: workers from every endpoint's cap


def most_in_flight(servers: list[FakeChatServer]) -> int:
    marks = sorted((t, d) for s in servers for r in s.requests for t, d in ((r.arrived, 1), (r.finished, -1)))
    best = now = 0
    for _, d in marks:
        now += d
        best = max(best, now)
    return best


@pytest.mark.slow
async def test_the_pipeline_fills_every_endpoints_concurrency(two_servers, tmp_path, monkeypatch):
    """Two endpoints of 2 calls each, 1 s latency, one call per offer: the pipeline's judge keeps
    4 calls in flight (before issue 28 it started judge.max_concurrency = 2 workers, half the
    pool), and every step says how busy the judge was and how much of its quota it used."""
    from jobrl_async.ops import log
    import io

    import orjson

    from tests.test_pipeline import make_pipeline, small_config

    a, b = two_servers
    for s in (a, b):
        s.latency_ms = 1000
    cfg = small_config(tmp_path / "ckpt", **{"judge.mode": "hybrid", "judge.calls": "per_offer",
                                              "judge.max_concurrency": 2, "pipeline.max_steps": 1,
                                              "validation.every_steps": 0})
    cfg.judge.endpoints = pool_config([("openai", a), ("openai", b)]).judge.endpoints
    for name, key in pool_env(2).items():
        monkeypatch.setenv(name, key)
    buf = io.BytesIO()
    log.configure("json", "info", stream=buf)
    pipeline = await make_pipeline(cfg, tmp_path)
    await pipeline.run()
    assert most_in_flight([a, b]) == 4 and len(a.requests) + len(b.requests) >= 8
    (step,) = [e for e in map(orjson.loads, buf.getvalue().splitlines()) if e["event"] == "step"]
    assert 1.0 <= step["judge_busy_s"] <= step["step_s"] and 0 < step["judge_tpm_used"] < 1


# ---------------------------------------------------------------- all of it in one run


@pytest.mark.slow
async def test_a_two_step_run_against_a_server_that_says_absurd_things_finishes(tmp_path, monkeypatch):
    """Absurd usage on every reply, absurd reset headers, replies trickled past the deadline and
    redirects to another host: the run finishes in seconds, nothing fails, the counts stay sane
    and the key never reaches the other host."""
    import io
    import orjson

    from jobrl_async.ops import log
    from jobrl_async.pipeline.daemon import log_run_summary
    from tests.test_pipeline import make_pipeline, small_config

    stream = io.BytesIO()
    log.configure("json", "info", stream=stream)
    hostile = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "99999h"}
    with FakeChatServer(api_key=FAKE_KEY) as elsewhere, \
            FakeChatServer(api_key=FAKE_KEY, header_overrides=hostile,
                           usage_override={"prompt_tokens": 10**9, "total_tokens": "abc"}) as server:
        server.redirect_to = elsewhere.url
        for var in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_DEPLOYMENT_NAME"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
        cfg = small_config(tmp_path / "ckpt", **{"judge.mode": "hybrid", "pipeline.max_steps": 2,
                                                "validation.every_steps": 0, "generation.max_new_tokens": 48,
                                                "judge.timeout_s": 2.0, "judge.backoff_max_s": 0.2})
        pipeline = await make_pipeline(cfg, tmp_path)
        server.inject("trickle", times=2)
        server.inject("redirect", times=2)
        started = time.monotonic()
        await pipeline.run()
        took = time.monotonic() - started
        log_run_summary(pipeline, None)
        await pipeline.parts.judge.aclose()
    logged = [orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    steps = [e for e in logged if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2] and took < 120
    assert all(e["trajectories"]["judge_failed"] == 0 for e in steps)
    (summary,) = [e for e in logged if e["event"] == "run_summary"]
    assert 0 < summary["judge"]["tokens"] <= 2 * server.charged_tokens  # our estimates, never 10**9 a call
    assert len([e for e in logged if e["event"] == "judge_usage_ignored"]) == 1
    assert elsewhere.requests == [] and FAKE_KEY.encode() not in stream.getvalue()
    trickled = [r for r in server.requests if r.finished - r.arrived >= 1.9]
    assert len(trickled) == 2  # both cut at the 2 s deadline and asked again
