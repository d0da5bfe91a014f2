"""Judges of today against the fake judge over real HTTP: reasoning models learnt from their 400s in
every URL shape (Azure deployments, Azure v1, OpenAI), the reasoning budget, structured outputs,
usage as the server counts it (reasoning, cached, dollars), and the hostile server's tricks that
the client's construction defends against (absurd usage, trickled or huge bodies, redirects)."""

from __future__ import annotations

import io

import orjson
import pytest

from jobrl_async.config import JudgeConfig, Secrets
from jobrl_async.errors import JudgeError
from jobrl_async.judge.client import OfferRejected
from jobrl_async.judge.client import JudgeStats
from jobrl_async.judge.parse import parse_reply
from jobrl_async.judge.pool import JudgePool
from jobrl_async.judge.schema import criterion_format
from jobrl_async.judge.stage import Judge
from jobrl_async.ops import log
from jobrl_async.testing.fake_judge import FakeChatServer
from tests.support.judge_fixtures import DEPLOYMENT, FAKE_KEY
from tests.test_judge_client import MESSAGES, fast_config, secrets_for
from tests.test_pipeline import events  # noqa: F401 (a fixture)

SERVED = "gpt-5-mini-2025-08-07"
SHAPES = ("openai", "azure", "azure-v1")


@pytest.fixture
def captured() -> io.BytesIO:
    stream = io.BytesIO()
    log.configure("json", "debug", stream=stream)
    return stream


def logged(stream: io.BytesIO, name: str) -> list[dict]:
    return [e for e in (orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip())
            if e["event"] == name]


def config(**overrides) -> JudgeConfig:
    """`fast_config` with a 5 s deadline: the fake here answers at a real model's pace."""
    return fast_config(**{"timeout_s": 5.0, **overrides})


def pool(server: FakeChatServer, shape: str = "openai", **overrides) -> JudgePool:
    return JudgePool(config(**overrides), secrets_for(server, shape), JudgeStats())


async def ask(judges: JudgePool, criterion: str = "skill_relevance") -> object:
    return await judges.ask(criterion, MESSAGES, lambda text: parse_reply(criterion, text), judges.cfg.max_tokens,
                            schema=criterion_format(criterion))


@pytest.fixture
def reasoning_server():
    with FakeChatServer(api_key=FAKE_KEY, deployments=(DEPLOYMENT,), family="gpt-5", served_model=SERVED) as server:
        yield server


# ---------------------------------------------------------------- the dialect, learnt


@pytest.mark.parametrize(("family", "refusals", "effort"), [
    ("gpt-5", ["max_tokens", "reasoning_effort"], "minimal"),  # no `none`: the lowest it lists
    ("gpt-5.1", ["max_tokens"], "none"),
    ("o1-mini", ["max_tokens", "reasoning_effort"], None),  # no reasoning_effort at all
])
@pytest.mark.parametrize("shape", SHAPES)
async def test_a_reasoning_model_is_learnt_in_every_url_shape(captured, family, refusals, effort, shape):
    with FakeChatServer(api_key=FAKE_KEY, deployments=(DEPLOYMENT,), family=family, served_model=SERVED) as server:
        server.reasoning_means["medium"] = 200  # o1-mini reasons at medium: kept inside the first allowance
        judges = pool(server, shape)
        first = await ask(judges)
        second = await ask(judges)
        await judges.aclose()
    assert first.name == second.name == "skill_relevance"
    statuses = [r.status for r in server.requests]
    assert statuses == [400] * len(refusals) + [200, 200]  # each 400 once, then never again
    refused = [orjson.loads(orjson.dumps(r.body)) for r in server.requests[: len(refusals)]]
    assert [e["param"] for e in logged(captured, "judge_dialect_refused")] == refusals
    body = server.requests[-1].body
    assert "max_tokens" not in body and "temperature" not in body and body.get("reasoning_effort") == effort
    assert body["max_completion_tokens"] > judges.cfg.max_tokens  # the answer plus a reasoning allowance
    assert body["response_format"]["type"] == "json_schema"
    if shape == "azure-v1":
        assert server.requests[-1].path == "/openai/v1/chat/completions" and body["model"] == DEPLOYMENT
        assert "api-version" not in server.requests[-1].query
    (announced,) = logged(captured, "judge_dialect")  # once, with the model the server names
    assert (announced["dialect"], announced["reasoning_effort"], announced["model"]) == ("reasoning", effort, SERVED)
    assert refused[0]["max_tokens"] == judges.cfg.max_tokens  # classic first: nothing guessed from a name
    assert judges.stats.dialect_refusals == judges.first.stats.dialect_refusals == len(refusals)
    assert FAKE_KEY.encode() not in captured.getvalue()


async def test_a_classic_model_keeps_the_classic_dialect_and_an_old_api_version_works(captured):
    with FakeChatServer(api_key=FAKE_KEY, deployments=(DEPLOYMENT,)) as server:
        judges = pool(server, "azure", api_version="2024-10-21")
        await ask(judges)
        await judges.aclose()
    (request,) = server.requests
    assert request.status == 200 and request.body["max_tokens"] == 200 and request.body["temperature"] == 0
    assert request.query["api-version"] == "2024-10-21"


async def test_a_reasoning_deployment_on_an_old_api_version_is_one_clear_line(reasoning_server):
    judges = pool(reasoning_server, "azure", api_version="2024-10-21")
    with pytest.raises(OfferRejected, match="judge.api_version to 2024-12-01-preview or later"):
        await ask(judges)
    await judges.aclose()
    # classic refused (max_tokens), reasoning refused (unknown parameter), back to classic: a cycle, stopped
    assert [r.status for r in reasoning_server.requests] == [400, 400]


async def test_calls_in_flight_while_the_dialect_is_learnt_are_sent_again_not_failed(reasoning_server):
    import asyncio

    reasoning_server.latency_ms = 50
    judges = pool(reasoning_server)
    verdicts = await asyncio.gather(*(ask(judges) for _ in range(6)))  # all sent classic at once
    await judges.aclose()
    assert len(verdicts) == 6
    assert judges.stats.dialect_refusals == 2  # max_tokens, then effort none: learnt once for all of them


# ---------------------------------------------------------------- the reasoning budget


async def test_a_reply_emptied_by_reasoning_is_retried_once_with_a_larger_allowance(reasoning_server):
    reasoning_server.reasoning_means = {"minimal": 500}  # 250..750 reasoning tokens: over the first 256
    judges = pool(reasoning_server, reasoning_effort="minimal")
    verdict = await ask(judges)
    await judges.aclose()
    assert verdict.name == "skill_relevance"
    refused, cut, retried = reasoning_server.requests
    assert (refused.status, cut.status, retried.status) == (400, 200, 200)
    first_budget, second_budget = cut.body["max_completion_tokens"], retried.body["max_completion_tokens"]
    # four times the allowance, which has learnt from the cut reply (it spent all 256)
    assert first_budget == 200 + 256 and second_budget >= 200 + 4 * 256
    assert judges.stats.failures == 0


async def test_a_reply_cut_twice_fails_its_offer_naming_the_key(reasoning_server):
    reasoning_server.reasoning_means = {"minimal": 500}
    judges = pool(reasoning_server, reasoning_effort="minimal", max_reasoning_tokens=100)
    with pytest.raises(OfferRejected, match="judge.max_reasoning_tokens"):
        await ask(judges)
    await judges.aclose()
    assert [r.status for r in reasoning_server.requests] == [400, 200, 200]  # cut, cut: no third try


async def test_the_allowance_follows_what_the_replies_spend(reasoning_server):
    judges = pool(reasoning_server, reasoning_effort="low")  # gpt-5: 160..480 reasoning tokens at low
    for _ in range(12):
        await ask(judges)
    await judges.aclose()
    spent = judges.stats.reasoning_tokens
    assert spent == reasoning_server.usage_totals["reasoning"] > 0
    budgets = [r.body["max_completion_tokens"] for r in reasoning_server.requests if r.status == 200]
    assert budgets[0] == 200 + 1024  # before any reply: the effort's first allowance
    assert budgets[-1] < budgets[0]  # then 1.25 x the replies' high percentile: less reserved at intake


# ---------------------------------------------------------------- structured outputs


async def test_structured_outputs_fall_back_once_per_endpoint(captured):
    with FakeChatServer(api_key=FAKE_KEY, json_schema=False) as server:
        judges = pool(server)
        await ask(judges)
        await ask(judges)
        await judges.aclose()
    assert [r.status for r in server.requests] == [400, 200, 200]
    assert [r.body["response_format"]["type"] for r in server.requests] == ["json_schema", "json_object", "json_object"]
    (changed,) = logged(captured, "judge_dialect_refused")
    assert changed["now"]["response_format"] == "json_object"


# ---------------------------------------------------------------- tokens and dollars


async def test_reasoning_cached_tokens_and_dollars_are_the_servers_counts(reasoning_server):
    prices = dict(price_input_per_mtok=1.25, price_cached_input_per_mtok=0.125, price_output_per_mtok=10.0)
    judges = pool(reasoning_server, **prices)
    long_rules = [{"role": "system", "content": "Rules of the house. " * 300}, MESSAGES[1]]  # ~1,500 tokens
    for _ in range(3):
        await judges.ask("skill_relevance", long_rules, lambda text: parse_reply("skill_relevance", text), 200)
    await judges.aclose()
    served = reasoning_server.usage_totals
    stats = judges.stats
    assert stats.reasoning_tokens == served["reasoning"] > 0
    assert stats.cached_tokens == served["cached"] >= 2 * 1024  # the 2nd and 3rd calls hit the prefix cache
    assert stats.tokens == served["prompt"] + served["completion"]
    expected = ((served["prompt"] - served["cached"]) * 1.25 + served["cached"] * 0.125
                + served["completion"] * 10.0) / 1e6
    assert stats.usd == pytest.approx(expected)
    assert stats.as_dict()["usd"] == pytest.approx(expected, abs=1e-6)
    # charged at intake: the prompt as the server counted it plus the reply budget sent, per call
    sent = [r for r in reasoning_server.requests if r.status == 200]
    assert stats.charged_tokens == pytest.approx(reasoning_server.charged_tokens, rel=0.1)
    assert len(sent) == 3


@pytest.mark.parametrize("absurd", [
    {"prompt_tokens": 10**9}, {"prompt_tokens": 10**400}, {"total_tokens": "abc"}, {"total_tokens": -5},
    {"completion_tokens": float("nan")}, {"prompt_tokens": -1000}, {"prompt_tokens": 2**70},
])
async def test_absurd_usage_is_ignored_and_said_once(captured, absurd):
    with FakeChatServer(api_key=FAKE_KEY) as server:
        server.usage_override = absurd
        judges = pool(server)
        for _ in range(2):
            await ask(judges)
        limiter = judges.first.limiter
        await judges.aclose()
    assert judges.stats.tokens == 0 and judges.stats.reasoning_tokens == 0  # nothing believed
    assert 0 < judges.stats.charged_tokens < 10_000  # the estimates stand
    assert limiter.tokens.used < 10_000 and limiter.wait_s(1, limiter.now()) < 1  # pace and window untouched
    assert len(logged(captured, "judge_usage_ignored")) == 1


# ---------------------------------------------------------------- hostile servers


async def test_a_trickled_reply_is_cut_at_the_attempts_deadline():
    import time

    with FakeChatServer(api_key=FAKE_KEY) as server:
        server.inject("trickle", times=10)
        judges = pool(server, timeout_s=1.0, max_retries=1)
        started = time.monotonic()
        with pytest.raises(Exception) as caught:
            await ask(judges)
        elapsed = time.monotonic() - started
        await judges.aclose()
    assert elapsed < 4  # two attempts of at most 1 s each (and a short backoff), never the 60 s of trickle
    assert "within 1 s" in judges.describe(caught.value)
    assert len(server.requests) == 2


async def test_a_huge_body_is_not_read_past_its_cap():
    with FakeChatServer(api_key=FAKE_KEY) as server:
        server.inject("huge_body")
        judges = pool(server)
        verdict = await ask(judges)  # retried: the next reply is a normal one
        await judges.aclose()
    assert verdict.name == "skill_relevance" and judges.stats.retries == 1


async def test_a_redirect_is_not_followed_and_the_key_stays_home(captured):
    with FakeChatServer(api_key=FAKE_KEY, deployments=(DEPLOYMENT,)) as elsewhere, \
            FakeChatServer(api_key=FAKE_KEY, deployments=(DEPLOYMENT,)) as server:
        server.redirect_to = elsewhere.url
        server.inject("redirect")
        judges = pool(server, "azure")
        verdict = await ask(judges)  # mid-run a passing fault: asked again, of the same host
        server.inject("redirect", times=10)
        with pytest.raises(JudgeError, match=r"HTTP 307 .* redirected to 127\.0\.0\.1:\d+, not followed"):
            await Judge(_judge_config(), secrets_for(server, "azure")).check()  # before a run: a URL to fix
        await judges.aclose()
    assert verdict.name == "skill_relevance" and judges.stats.retries == 1
    assert elsewhere.requests == []  # neither a request nor its api-key header went to the other host
    assert FAKE_KEY.encode() not in captured.getvalue()


def _judge_config():
    from jobrl_async.config import Config

    cfg = Config()
    cfg.judge = config()
    return cfg


# ---------------------------------------------------------------- Entra ID


ENTRA_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra-test-token.c2lnbmF0dXJl"


@pytest.fixture
def azure_cli(tmp_path, monkeypatch):
    """A stand-in `az` on PATH (the real azure-identity runs it as it runs the Azure CLI), and
    DefaultAzureCredential told to use only that (AZURE_TOKEN_CREDENTIALS): no network involved."""
    import json
    import os
    import time

    script = tmp_path / "bin" / "az"
    script.parent.mkdir()

    def answer(token: str | None) -> None:
        if token is None:
            body = "echo 'ERROR: Please run az login to setup account.' >&2; exit 1"
        else:
            out = json.dumps({"accessToken": token, "expires_on": int(time.time()) + 3600, "tokenType": "Bearer"})
            body = f"cat <<'JSON'\n{out}\nJSON"
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)

    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential")
    return answer


@pytest.mark.parametrize("shape", ["azure", "azure-v1"])
async def test_entra_id_signs_in_without_a_key_and_the_token_is_never_logged(captured, azure_cli, shape):
    azure_cli(ENTRA_TOKEN)
    with FakeChatServer(api_key=FAKE_KEY, deployments=(DEPLOYMENT,), entra_token=ENTRA_TOKEN) as server:
        url = server.azure_endpoint + ("/openai/v1" if shape == "azure-v1" else "")
        judges = JudgePool(config(auth="entra"), Secrets(azure_endpoint=url, azure_deployment=DEPLOYMENT),
                           JudgeStats())
        verdict = await ask(judges)
        log.get_logger("test").info("echo", header=f"Bearer {ENTRA_TOKEN}")  # as a careless log line would
        await judges.aclose()
    assert verdict.name == "skill_relevance" and [r.status for r in server.requests] == [200]
    assert ENTRA_TOKEN.encode() not in captured.getvalue()  # registered with the redactor when fetched


async def test_a_failing_entra_sign_in_is_one_line_naming_the_endpoint(azure_cli):
    azure_cli(None)
    with FakeChatServer(api_key=FAKE_KEY, deployments=(DEPLOYMENT,)) as server:
        judges = JudgePool(config(auth="entra"),
                           Secrets(azure_endpoint=server.azure_endpoint, azure_deployment=DEPLOYMENT), JudgeStats())
        with pytest.raises(JudgeError) as caught:
            await ask(judges)
        await judges.aclose()
    line = caught.value.args[0]
    assert line.startswith(f"Entra ID sign-in for the judge ({judges.first.name}) failed: ")
    assert "AzureCliCredential: Please run 'az login'" in line  # the reason azure-identity gave, kept
    assert "\n" not in line and server.requests == []


def test_entra_without_the_extra_says_how_to_install_it(monkeypatch):
    import sys

    from jobrl_async.errors import ConfigError

    monkeypatch.setitem(sys.modules, "azure.identity.aio", None)  # as if azure-identity were not installed
    with pytest.raises(ConfigError, match=r"pip install 'jobrl-async\[azure\]'"):
        JudgePool(config(auth="entra"), Secrets(azure_endpoint="https://res.openai.azure.com",
                                                azure_deployment=DEPLOYMENT), JudgeStats())


# ---------------------------------------------------------------- a whole run, and `judge check`


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
async def test_a_run_with_the_default_judge_settings_against_a_reasoning_model(tmp_path, events, monkeypatch,
                                                                              shape):
    """The default configuration (dialect auto, effort lowest, per-criterion calls of the llm mode)
    against a gpt-5-mini-like server: nothing fails, a handful of 400s, the server's own counts."""
    from jobrl_async.pipeline.daemon import log_run_summary
    from tests.test_pipeline import make_pipeline, small_config  # noqa: F811

    with FakeChatServer(api_key=FAKE_KEY, deployments=(DEPLOYMENT,), family="gpt-5", served_model=SERVED) as server:
        for var in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_DEPLOYMENT_NAME", "OPENAI_API_KEY",
                    "OPENAI_BASE_URL"):
            monkeypatch.delenv(var, raising=False)
        for var, value in vars(secrets_for(server, shape)).items():
            if value:
                monkeypatch.setenv({"openai_api_key": "OPENAI_API_KEY", "openai_base_url": "OPENAI_BASE_URL",
                                    "azure_api_key": "AZURE_OPENAI_API_KEY", "azure_endpoint": "AZURE_OPENAI_ENDPOINT",
                                    "azure_deployment": "AZURE_DEPLOYMENT_NAME"}[var], value)
        cfg = small_config(tmp_path / "ckpt", **{
            "judge.mode": "llm", "pipeline.max_steps": 2, "validation.every_steps": 0, "generation.max_new_tokens": 48,
            "judge.price_input_per_mtok": 0.25, "judge.price_cached_input_per_mtok": 0.025,
            "judge.price_output_per_mtok": 2.0})
        pipeline = await make_pipeline(cfg, tmp_path)
        await pipeline.run()
        log_run_summary(pipeline, None)
        await pipeline.parts.judge.aclose()
    steps = [e for e in events.refresh() if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2]
    assert all(e["trajectories"]["judge_failed"] == 0 and e["trajectories"]["scored"] > 0 for e in steps)
    assert sum(r.status == 400 for r in server.requests) == 2  # max_tokens, then effort none: once per run
    (summary,) = [e for e in events if e["event"] == "run_summary"]
    judged, served = summary["judge"], server.usage_totals
    assert judged["tokens"] == pytest.approx(server.charged_tokens, rel=0.1)  # as charged at intake
    assert judged["reasoning_tokens"] == served["reasoning"] > 0 and judged["cached_tokens"] == served["cached"]
    usd = ((served["prompt"] - served["cached"]) * 0.25 + served["cached"] * 0.025 + served["completion"] * 2.0) / 1e6
    assert judged["usd"] == pytest.approx(usd, rel=1e-3)
    assert all({"reasoning_tokens", "cached_tokens", "usd"} <= set(e["judge"]) for e in steps)
    (dialect,) = [e for e in events if e["event"] == "judge_dialect"]
    assert (dialect["dialect"], dialect["reasoning_effort"], dialect["model"]) == ("reasoning", "minimal", SERVED)


def test_judge_check_prints_the_dialect_the_effort_and_the_real_model(reasoning_server, capsys, monkeypatch):
    from jobrl_async.cli import main

    monkeypatch.setenv("AZURE_OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", reasoning_server.azure_endpoint + "/openai/v1")
    monkeypatch.setenv("AZURE_DEPLOYMENT_NAME", DEPLOYMENT)
    assert main(["judge", "check"]) == 0
    result = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["dialect"], result["reasoning_effort"], result["served_model"], result["api"]) == (
        "reasoning", "minimal", SERVED, "azure-v1")


# ---------------------------------------------------------------- local judges


async def test_a_local_judge_with_no_quota_is_bounded_by_concurrency_only():
    """vLLM, Ollama, llama.cpp: `rpm = 0`, `tpm = 0`. 40 calls at 300 ms with 20 in flight take
    ~0.6 s; a 600 RPM quota would have spread them over 4 s."""
    import asyncio
    import time

    with FakeChatServer(api_key=FAKE_KEY, latency_ms=300) as server:
        judges = pool(server, rpm=0, tpm=0, max_concurrency=20)
        started = time.monotonic()
        await asyncio.gather(*(ask(judges) for _ in range(40)))
        elapsed = time.monotonic() - started
        await judges.aclose()
    arrivals = sorted(r.arrived for r in server.requests)
    assert len(arrivals) == 40 and arrivals[19] - arrivals[0] < 0.25  # the first 20 left together
    in_flight = max(sum(r.arrived <= t < r.finished for r in server.requests) for t in arrivals)
    assert in_flight == 20 and elapsed < 3.0
