"""The judge client: the real openai SDK against the local server, both URL shapes.

Retries, Retry-After, timeouts, bad replies, configuration errors and the key's secrecy.
"""

from __future__ import annotations

import time
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import openai
import pytest

from jobrl_async.config import JudgeConfig, Secrets
from jobrl_async.errors import ConfigError, JudgeError
from jobrl_async.judge.client import (
    DeadlineExceeded,
    JudgeClient,
    JudgeStats,
    OfferRejected,
    is_name_error,
    is_retryable,
    missing_credentials,
)
from jobrl_async.judge.limiter import Limiter
from jobrl_async.judge.parse import UnreadableVerdict, parse_reply
from jobrl_async.judge.pool import JudgePool
from jobrl_async.judge.probe import SAMPLE_CONTEXT, example_offer
from jobrl_async.judge.prompts import build_messages, estimate_tokens
from jobrl_async.judge.schema import criterion_format
from jobrl_async.ops.log import host_of
from jobrl_async.retry import retry_after_s
from jobrl_async.testing.fake_judge import FakeChatServer
from tests.support.judge_fixtures import DEPLOYMENT, FAKE_KEY

SHAPES = ("openai", "azure")
MESSAGES = build_messages("skill_relevance", SAMPLE_CONTEXT, example_offer(SAMPLE_CONTEXT))
ANSWER = {"answer": "YES", "score": 9, "missing_skills": [], "irrelevant_skills": ["Origami"]}


def fast_config(**overrides) -> JudgeConfig:
    cfg = JudgeConfig(rpm=60_000, tpm=100_000_000, timeout_s=2.0, max_retries=3, backoff_max_s=0.02)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def secrets_for(server: FakeChatServer, shape: str, key: str = FAKE_KEY, deployment: str = DEPLOYMENT) -> Secrets:
    """The judge's variables for one URL shape: openai, azure (deployments) or azure-v1."""
    if shape == "openai":
        return Secrets(openai_api_key=key, openai_base_url=server.openai_base_url)
    url = server.azure_endpoint + ("/openai/v1" if shape == "azure-v1" else "")
    return Secrets(azure_api_key=key, azure_endpoint=url, azure_deployment=deployment)


class OneEndpoint:
    """One endpoint asked the way the stage and `judge check` ask: a pool of one routes, retries
    and parses; the endpoint's client is at hand for its counters and its words."""

    def __init__(self, cfg: JudgeConfig, secrets: Secrets, limiter: Limiter | None = None,
                 stats: JudgeStats | None = None) -> None:
        self.pool = JudgePool(cfg, secrets, stats or JudgeStats(), limiter=limiter or Limiter.from_config(cfg))
        self.client: JudgeClient = self.pool.first.client

    async def ask(self, criterion: str, messages: list[dict], attempts: int | None = None):
        return await self.pool.ask(criterion, messages, lambda text: parse_reply(criterion, text),
                                   self.pool.cfg.max_tokens, attempts=attempts, schema=criterion_format(criterion))

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def __aenter__(self) -> "OneEndpoint":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def make_client(server: FakeChatServer, shape: str = "openai", **overrides) -> OneEndpoint:
    return OneEndpoint(fast_config(**overrides), secrets_for(server, shape))


# ---------------------------------------------------------------- pure helpers


def test_retry_after_prefers_milliseconds_then_seconds_then_a_date():
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert retry_after_s({"retry-after": "3"}) == 3.0
    date = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 < retry_after_s({"retry-after": date}) <= 30
    assert retry_after_s({"retry-after-ms": "soon", "retry-after": "1.5"}) == 1.5
    assert retry_after_s({"retry-after": "whenever"}) is None
    assert retry_after_s({"retry-after-ms": "-5"}) is None
    assert retry_after_s({}) is None


def test_host_of_keeps_host_and_port_only():
    assert host_of("https://user:pw@my-res.openai.azure.com/") == "my-res.openai.azure.com"
    assert host_of("http://127.0.0.1:8080/v1") == "127.0.0.1:8080"


def test_missing_credentials_names_the_variables():
    assert "AZURE_OPENAI_ENDPOINT" in missing_credentials(Secrets()) and "OPENAI_API_KEY" in missing_credentials(Secrets())
    half = missing_credentials(Secrets(azure_api_key="k" * 10))
    assert half == "incomplete Azure OpenAI judge settings: set AZURE_OPENAI_ENDPOINT, AZURE_DEPLOYMENT_NAME"
    with pytest.raises(ConfigError, match="no judge credentials"):
        JudgeClient(fast_config(), Secrets(), Limiter.from_config(fast_config()), JudgeStats())


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("shape", SHAPES)
async def test_happy_path_in_both_url_shapes(judge_server: FakeChatServer, shape: str):
    judge_server.answers["skill_relevance"] = ANSWER
    client = make_client(judge_server, shape)
    verdict = await client.ask("skill_relevance", MESSAGES)
    await client.aclose()

    assert (verdict.name, verdict.answer, verdict.score, verdict.irrelevant_skills) == (
        "skill_relevance", "YES", 9.0, ("Origami",))
    (request,) = judge_server.requests
    if shape == "azure":
        assert request.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
        assert request.query["api-version"] == fast_config().api_version
    else:
        assert request.path == "/v1/chat/completions"
    body = request.body
    assert body["temperature"] == 0 and body["max_tokens"] == 200
    assert body["response_format"]["type"] == "json_schema"  # strict structured output, where taken
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["messages"] == MESSAGES
    assert request.headers["x-stainless-retry-count"] == "0"  # the SDK's retries are off
    assert client.stats.requests == 1 and client.stats.tokens > 0 and client.stats.retries == 0


async def test_usage_corrects_the_token_estimate(judge_server: FakeChatServer):
    cfg = fast_config()
    frozen = Limiter(cfg.rpm, tpm=600_000, max_concurrency=4, clock=lambda: 100.0)  # no refill
    client = OneEndpoint(cfg, secrets_for(judge_server, "openai"), frozen)
    await client.ask("skill_relevance", MESSAGES)
    await client.aclose()

    server_prompt_tokens = sum(len(m["content"]) for m in MESSAGES) // 4  # what the fake reports
    estimate = estimate_tokens(MESSAGES, cfg.max_tokens)
    charged = frozen.tokens.used
    # the prompt estimate is replaced by the server's count; max_tokens stays charged (intake)
    assert charged == server_prompt_tokens + cfg.max_tokens != estimate
    assert client.stats.tokens > server_prompt_tokens  # usage.total_tokens: prompt + completion
    assert client.stats.charged_tokens == charged  # the step's `judge.tokens`: as charged, corrected


async def test_429_with_retry_after_ms_is_waited_out_then_succeeds(judge_server: FakeChatServer):
    judge_server.inject("429", retry_after_ms=300)
    client = make_client(judge_server)
    verdict = await client.ask("skill_relevance", MESSAGES)
    await client.aclose()

    first, second = judge_server.requests
    assert (first.status, second.status) == (429, 200) and verdict.name == "skill_relevance"
    assert second.arrived - first.finished >= 0.3  # at least what the server asked, not the 20 ms backoff
    assert (client.stats.http_429, client.stats.retries) == (1, 1)


async def test_a_429_pauses_the_shared_limiter_for_other_callers(judge_server: FakeChatServer):
    judge_server.inject("429", retry_after_ms=400)
    cfg = fast_config()
    shared, stats = Limiter.from_config(cfg), JudgeStats()
    one = OneEndpoint(cfg, secrets_for(judge_server, "openai"), shared, stats)
    other = OneEndpoint(cfg, secrets_for(judge_server, "openai"), shared, stats)
    await one.ask("skill_relevance", MESSAGES)  # got the 429, waited, retried
    rejected_at = judge_server.requests[0].finished
    assert shared.paused_until >= rejected_at + 0.4 - 0.05  # the endpoint was paused
    await other.ask("skill_relevance", MESSAGES)
    assert all(r.arrived >= rejected_at + 0.4 - 0.01 for r in judge_server.requests[1:])
    await one.aclose()
    await other.aclose()


async def test_500_once_is_retried(judge_server: FakeChatServer):
    judge_server.inject("500")
    client = make_client(judge_server, "azure")
    await client.ask("skill_relevance", MESSAGES)
    await client.aclose()
    assert [r.status for r in judge_server.requests] == [500, 200]
    assert client.stats.retries == 1


async def test_a_hung_call_times_out_and_is_retried(judge_server: FakeChatServer):
    judge_server.inject("hang", hang_s=3.0)
    client = make_client(judge_server, timeout_s=0.3)
    verdict = await client.ask("skill_relevance", MESSAGES)
    await client.aclose()
    assert verdict.name == "skill_relevance"
    assert len(judge_server.requests) == 2 and client.stats.retries == 1


async def test_persistent_timeouts_raise_the_last_error_after_the_retries(judge_server: FakeChatServer):
    judge_server.inject("hang", times=10, hang_s=3.0)
    client = make_client(judge_server, timeout_s=0.2, max_retries=2)
    # the read timeout and the attempt's total deadline are both 0.2 s: either may fire first
    with pytest.raises((openai.APITimeoutError, DeadlineExceeded)) as caught:
        await client.ask("skill_relevance", MESSAGES)
    assert len(judge_server.requests) == 3  # 1 + max_retries, and nothing from the SDK itself
    assert "within 0.2 s" in client.describe(caught.value)
    await client.aclose()


async def test_malformed_json_is_retried(judge_server: FakeChatServer):
    judge_server.inject("malformed")
    client = make_client(judge_server)
    verdict = await client.ask("skill_relevance", MESSAGES)
    await client.aclose()
    assert verdict.name == "skill_relevance" and client.stats.retries == 1


async def test_always_malformed_fails_as_unparseable(judge_server: FakeChatServer):
    judge_server.inject("malformed", times=10)
    client = make_client(judge_server, max_retries=1)
    with pytest.raises(UnreadableVerdict) as caught:
        await client.ask("skill_relevance", MESSAGES)
    assert client.describe(caught.value).startswith("unparseable reply")
    await client.aclose()


@pytest.mark.parametrize("kind", ["fenced", "prose"])
async def test_fenced_or_prose_wrapped_json_is_read_without_a_retry(judge_server: FakeChatServer, kind: str):
    judge_server.inject(kind)
    judge_server.answers["skill_relevance"] = {**ANSWER, "score": 4, "answer": "NO", "irrelevant_skills": ["Knitting"]}
    client = make_client(judge_server)
    verdict = await client.ask("skill_relevance", MESSAGES)
    await client.aclose()
    assert (verdict.score, verdict.irrelevant_skills) == (4.0, ("Knitting",))
    assert client.stats.retries == 0


async def test_a_server_without_json_mode_is_asked_again_without_it(judge_server: FakeChatServer):
    judge_server.reject_json_mode = True
    client = make_client(judge_server)
    await client.ask("skill_relevance", MESSAGES)
    await client.ask("skill_relevance", MESSAGES)
    await client.aclose()
    assert [r.status for r in judge_server.requests] == [400, 200, 200]
    assert ["response_format" in r.body for r in judge_server.requests] == [True, False, False]
    assert client.json_mode is False


# ---------------------------------------------------------------- configuration errors


@pytest.mark.parametrize("shape", SHAPES)
async def test_wrong_key_is_a_clear_judge_error_without_the_key(judge_server: FakeChatServer, shape: str):
    judge_server.api_key = "the-right-key"  # the server echoes what it got in its 401 message
    client = make_client(judge_server, shape)
    with pytest.raises(JudgeError) as caught:
        await client.ask("skill_relevance", MESSAGES)
    await client.aclose()
    text = str(caught.value)
    variable = "AZURE_OPENAI_API_KEY" if shape == "azure" else "OPENAI_API_KEY"
    assert text == f"judge: authentication failed at {host_of(judge_server.url)} (HTTP 401): check {variable}"
    assert FAKE_KEY not in text and FAKE_KEY not in repr(caught.value.__cause__)
    assert len(judge_server.requests) == 1  # never retried


async def test_unknown_deployment_is_a_clear_judge_error(judge_server: FakeChatServer):
    cfg = fast_config()
    secrets = secrets_for(judge_server, "azure", deployment="gpt-typo")
    client = OneEndpoint(cfg, secrets)
    with pytest.raises(JudgeError, match=r"deployment 'gpt-typo' not found at 127\.0\.0\.1:\d+ \(HTTP 404\)"):
        await client.ask("skill_relevance", MESSAGES)
    await client.aclose()
    assert len(judge_server.requests) == 1


async def test_connection_refused_is_transient_and_described():
    with FakeChatServer(api_key=FAKE_KEY) as server:
        url = server.openai_base_url  # a port that was open and is now closed
    cfg = fast_config(max_retries=1)
    client = OneEndpoint(cfg, Secrets(openai_api_key=FAKE_KEY, openai_base_url=url))
    started = time.monotonic()
    with pytest.raises(openai.APIConnectionError) as caught:
        await client.ask("skill_relevance", MESSAGES)
    assert time.monotonic() - started < 30
    assert client.describe(caught.value).startswith(f"cannot connect to {host_of(url)}: ")
    assert client.stats.retries == 1
    await client.aclose()


# ---------------------------------------------------------------- refused requests, unreadable replies


@pytest.mark.parametrize(("fault", "status"), [
    ("context_length", 400), ("413", 413), ("content_filter", 400), ("filtered_reply", 200),
])
async def test_a_request_refused_for_its_content_is_an_offer_rejection_not_retried(
    judge_server: FakeChatServer, fault: str, status: int
):
    judge_server.inject(fault)
    client = make_client(judge_server)
    with pytest.raises(OfferRejected) as caught:
        await client.ask("skill_relevance", MESSAGES)
    await client.aclose()
    if fault in ("content_filter", "filtered_reply"):  # the offer's own text: not counted toward the breaker
        assert caught.value.content_filter and "content filter" in str(caught.value)
    else:
        assert not caught.value.content_filter
        assert f"HTTP {status} from {host_of(judge_server.url)}" in str(caught.value)
    assert len(judge_server.requests) == 1 and client.stats.retries == 0


@pytest.mark.parametrize("fault", ["nested", "two_answers"])
async def test_a_reply_that_cannot_be_read_safely_is_retried(judge_server: FakeChatServer, fault: str):
    judge_server.inject(fault)
    judge_server.answers["skill_relevance"] = ANSWER
    client = make_client(judge_server)
    verdict = await client.ask("skill_relevance", MESSAGES)
    await client.aclose()
    assert verdict.score == 9.0 and client.stats.retries == 1


async def test_a_host_name_that_does_not_resolve_is_told_apart_from_a_refused_connection():
    for url, name_error in (("http://no-such-host.invalid/v1", True), ("http://127.0.0.1:9/v1", False)):
        cfg = fast_config(max_retries=0)
        client = OneEndpoint(cfg, Secrets(openai_api_key=FAKE_KEY, openai_base_url=url))
        with pytest.raises(openai.APIConnectionError) as caught:
            await client.ask("skill_relevance", MESSAGES)
        await client.aclose()
        assert is_name_error(caught.value) is name_error and is_retryable(caught.value)


async def test_a_body_nested_past_the_parsers_stack_is_retried(judge_server: FakeChatServer):
    judge_server.inject("nested_body")  # HTTP 200, "[" x 3000: a RecursionError inside the SDK
    client = make_client(judge_server)
    verdict = await client.ask("skill_relevance", MESSAGES)
    await client.aclose()
    assert verdict.name == "skill_relevance" and client.stats.retries == 1
