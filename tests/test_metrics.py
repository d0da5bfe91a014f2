"""The metrics endpoint over real HTTP on 127.0.0.1: what moves, what is refused, when it is unhealthy."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import orjson
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from jobrl_async.errors import ConfigError
from jobrl_async.ops.metrics import RunMetrics, counter_increase, serve_metrics


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def step_fields(step: int = 1, **extra) -> dict:
    fields = {
        "step": step, "epoch": 0, "reward_mean": 6.5, "reward_std": 1.25, "skipped_groups": 2,
        "policy_lag": 1, "trajectories": {"scored": 98, "judge_failed": 1, "dropped": 1},
        "loss": 0.125, "step_s": 42.0,
        "queue_depths": {"generator": 1, "judge": 37, "collector": 0, "learner": 0},
        "busy": {"producer": 0.01, "generator": 0.4, "judge": 0.95, "collector": 0.02, "learner": 0.3},
        "device_idle_fraction": 0.3, "judge_rpm": 583.0,
    }
    fields.update(extra)
    return fields


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from Prometheus text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def served(clock: Clock):
    metrics = RunMetrics(stall_timeout_s=600.0, clock=clock)
    server = await serve_metrics(metrics, port=0)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
        yield metrics, server, http
    await server.aclose()


async def scrape(http: aiohttp.ClientSession) -> dict[tuple[str, tuple], float]:
    async with http.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
        return samples(await resp.text())


async def raw_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    reply = await reader.read()
    writer.close()
    return reply


async def test_metrics_move_after_a_step(served) -> None:
    metrics, _, http = served
    before = await scrape(http)
    assert before[("jobrl_steps_total", ())] == 0
    assert before[("jobrl_trajectories_total", (("outcome", "scored"),))] == 0

    metrics.on_step(step_fields(step=1))
    metrics.on_step(step_fields(step=2, reward_mean=7.0, validation_score=7.4, best_score=7.4,
                                queue_depths={"judge": 12}))
    after = await scrape(http)
    assert after[("jobrl_steps_total", ())] == 2
    assert after[("jobrl_step", ())] == 2
    assert after[("jobrl_reward_mean", ())] == 7.0
    assert after[("jobrl_reward_std", ())] == 1.25
    assert after[("jobrl_validation_score", ())] == 7.4
    assert after[("jobrl_validation_best_score", ())] == 7.4
    assert after[("jobrl_skipped_groups_total", ())] == 4
    assert after[("jobrl_trajectories_total", (("outcome", "scored"),))] == 196
    assert after[("jobrl_trajectories_total", (("outcome", "dropped"),))] == 2
    assert after[("jobrl_queue_depth", (("queue", "judge"),))] == 12
    assert after[("jobrl_queue_depth", (("queue", "generator"),))] == 1  # last value reported
    assert after[("jobrl_stage_busy_fraction", (("stage", "judge"),))] == 0.95
    assert after[("jobrl_device_idle_fraction", ())] == 0.3
    assert after[("jobrl_judge_rpm", ())] == 583.0
    assert after[("jobrl_step_seconds_count", ())] == 2
    assert after[("jobrl_step_seconds_sum", ())] == 84.0
    assert after[("jobrl_step_seconds_bucket", (("le", "60.0"),))] == 2


async def test_offers_flagged_for_injection_are_counted(served) -> None:
    metrics, _, http = served
    metrics.on_step(step_fields(step=1, injection_flagged=3))
    metrics.on_step(step_fields(step=2, injection_flagged=0))
    metrics.on_step(step_fields(step=3, injection_flagged=2))
    assert (await scrape(http))[("jobrl_injection_flagged_offers_total", ())] == 5


async def test_best_validation_score_only_rises(served) -> None:
    metrics, _, http = served
    metrics.on_step(step_fields(step=1, validation_score=6.0))
    metrics.on_step(step_fields(step=2, validation_score=5.0))
    metrics.on_step(step_fields(step=3, reward_mean=None, loss=None))  # a step with no scored trajectory
    got = await scrape(http)
    assert got[("jobrl_validation_score", ())] == 5.0
    assert got[("jobrl_validation_best_score", ())] == 6.0
    assert got[("jobrl_reward_mean", ())] == 6.5  # None leaves the last value


async def test_judge_counters_follow_cumulative_totals(served) -> None:
    metrics, _, http = served
    metrics.on_judge(requests=100, tokens=50_000, http_429=3, failures=0, retries=3, paused=False)
    metrics.on_judge(requests=250, tokens=120_000, http_429=5, failures=1, retries=6, paused=True)
    got = await scrape(http)
    assert got[("jobrl_judge_requests_total", ())] == 250
    assert got[("jobrl_judge_tokens_total", ())] == 120_000
    assert got[("jobrl_judge_http_429_total", ())] == 5
    assert got[("jobrl_judge_failures_total", ())] == 1
    assert got[("jobrl_judge_retries_total", ())] == 6
    assert got[("jobrl_judge_paused", ())] == 1
    metrics.on_judge(requests=10, tokens=1000, http_429=0, failures=0, retries=0, paused=False)  # a new client
    got = await scrape(http)
    assert got[("jobrl_judge_requests_total", ())] == 260
    assert got[("jobrl_judge_paused", ())] == 0


async def test_reasoning_cached_tokens_and_dollars_are_counters(served) -> None:
    metrics, _, http = served
    metrics.on_judge(10, 5_000, 0, 0, 0, False, reasoning_tokens=300, cached_tokens=1024, usd=0.0125)
    metrics.on_judge(20, 9_000, 0, 0, 0, False, reasoning_tokens=500, cached_tokens=2048, usd=0.02)
    got = await scrape(http)
    assert got[("jobrl_judge_reasoning_tokens_total", ())] == 500
    assert got[("jobrl_judge_cached_tokens_total", ())] == 2048
    assert got[("jobrl_judge_usd_total", ())] == pytest.approx(0.02)


def test_counter_increase_treats_a_drop_as_a_restart() -> None:
    assert counter_increase(5, 9) == 4
    assert counter_increase(9, 9) == 0
    assert counter_increase(9, 2) == 2


async def test_checkpoint_uploads_by_kind_and_result(served) -> None:
    metrics, _, http = served
    metrics.on_checkpoint("best", ok=True)
    metrics.on_checkpoint("latest", ok=True)
    metrics.on_checkpoint("latest", ok=False)
    got = await scrape(http)
    assert got[("jobrl_checkpoint_uploads_total", (("kind", "best"), ("result", "ok")))] == 1
    assert got[("jobrl_checkpoint_uploads_total", (("kind", "latest"), ("result", "failed")))] == 1


async def test_healthz_turns_503_while_checkpoint_writes_keep_failing(served) -> None:
    metrics, _, http = served
    metrics.on_checkpoint("latest", ok=False)  # one failure, to be retried: still healthy
    async with http.get("/healthz") as resp:
        assert resp.status == 200
    metrics.on_checkpoint("latest", ok=False, persistent="8 failed in a row (see checkpoint_failed in the log)")
    async with http.get("/healthz") as resp:
        assert resp.status == 503
        assert orjson.loads(await resp.read()) == {
            "status": "failing",
            "reason": "checkpoint writes failing: 8 failed in a row (see checkpoint_failed in the log)",
        }
    metrics.heartbeat()  # training progressing does not hide it
    async with http.get("/healthz") as resp:
        assert resp.status == 503
    metrics.on_checkpoint("best", ok=True)  # a write went through
    async with http.get("/healthz") as resp:
        assert resp.status == 200


async def test_healthz_turns_503_after_the_stall_timeout_and_back(served, clock: Clock) -> None:
    metrics, _, http = served
    async with http.get("/healthz") as resp:
        assert resp.status == 200
        assert orjson.loads(await resp.read()) == {"status": "ok"}
    clock.t += 600.0  # exactly the timeout: not yet stalled
    async with http.get("/healthz") as resp:
        assert resp.status == 200
    clock.t += 12.0
    async with http.get("/healthz") as resp:
        assert resp.status == 503
        assert resp.headers["Content-Type"] == "application/json"
        assert orjson.loads(await resp.read()) == {"status": "stalled", "reason": "no progress for 612 s"}
    assert (await scrape(http))[("jobrl_seconds_since_progress", ())] == 612.0
    metrics.heartbeat()
    async with http.get("/healthz") as resp:
        assert resp.status == 200
    clock.t += 700.0
    metrics.on_step(step_fields())  # a step reported is progress too
    async with http.get("/healthz") as resp:
        assert resp.status == 200


async def test_health_names_a_paused_judge(clock: Clock) -> None:
    metrics = RunMetrics(stall_timeout_s=60.0, clock=clock)
    metrics.on_judge(requests=1, tokens=1, http_429=0, failures=5, retries=5, paused=True)
    clock.t += 90.0
    assert metrics.health() == (False, "no progress for 90 s (judge paused)")


@pytest.mark.parametrize("path", ["/", "/metric", "/metrics/", "/healthz/x", "/favicon.ico", "/config"])
async def test_unknown_paths_are_404(served, path: str) -> None:
    _, _, http = served
    async with http.get(path) as resp:
        assert resp.status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
async def test_only_get_is_allowed(served, method: str) -> None:
    _, _, http = served
    for path in ("/metrics", "/healthz"):
        async with http.request(method, path, data=b"x" if method in ("POST", "PUT") else None) as resp:
            assert resp.status == 405
            assert resp.headers["Allow"] == "GET"


async def test_query_strings_are_ignored(served) -> None:
    _, _, http = served
    async with http.get("/healthz?verbose=1") as resp:
        assert resp.status == 200


async def test_malformed_and_oversized_requests_are_400(served) -> None:
    _, server, _ = served

    def status(raw: bytes) -> bytes:
        return raw.split(b"\r\n", 1)[0].split(b" ")[1]  # "HTTP/1.x 400 Bad Request"

    assert status(await raw_request(server.port, b"GARBAGE\r\n\r\n")) == b"400"
    assert status(await raw_request(server.port, b"GET metrics HTTP/1.1\r\n\r\n")) == b"400"
    huge = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n"
    assert status(await raw_request(server.port, huge)) == b"400"
    ok = await raw_request(server.port, b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
    assert status(ok) == b"200" and ok.endswith(b'{"status":"ok"}')


async def test_binds_loopback_by_default() -> None:
    server = await serve_metrics(RunMetrics(stall_timeout_s=1.0))
    try:
        assert server.host == "127.0.0.1"
        assert server.port > 0
    finally:
        await server.aclose()


async def test_a_busy_port_is_a_config_error_naming_the_key() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=r"metrics\.port.*--metrics-port"):
            await serve_metrics(RunMetrics(stall_timeout_s=1.0), port=port)


async def test_aclose_does_not_wait_for_an_idle_client() -> None:
    server = await serve_metrics(RunMetrics(stall_timeout_s=1.0))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # connects, never speaks
    await asyncio.sleep(0.05)  # let the server accept it
    await asyncio.wait_for(server.aclose(), 5.0)  # 5 s: a hang guard, not a timing assertion
    assert await reader.read() == b""  # the server hung up
    writer.close()


def test_each_run_has_its_own_registry() -> None:
    a, b = RunMetrics(stall_timeout_s=1.0), RunMetrics(stall_timeout_s=1.0)
    a.on_step(step_fields())
    assert b"jobrl_steps_total 1.0" in a.exposition()
    assert b"jobrl_steps_total 0.0" in b.exposition()
    assert REGISTRY.get_sample_value("jobrl_steps_total") is None
