"""The remote (vLLM) generator against the fake server over real HTTP, and the TIS maths."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch
from structlog.testing import capture_logs

from jobrl_async.config import GenerationConfig
from jobrl_async.data import load_bundled
from jobrl_async.errors import ConfigError
from jobrl_async.generation.generator import STOP_TEXT, SampleRequest
from jobrl_async.learning.grpo import importance_weight
from jobrl_async.policy.prompts import prompt_ids
from jobrl_async.remote import RemoteGenerator, RemoteGeneratorError, RemoteOptions
from jobrl_async.remote.adapters import (
    adapter_folder,
    adapter_name,
    prune_adapter_folders,
    prune_old_adapters,
    server_path,
)
from jobrl_async.remote.options import normalise_url
from jobrl_async.remote.reply import MalformedReply, completion_request, parse_completions, server_message
from jobrl_async.remote.rotation import Rotation
from jobrl_async.retry import retry_wait
from jobrl_async.testing.fake_vllm import FakeVLLM
from jobrl_async.testing.samplers import cut, stop_token_ids, token_logprob
from tests.support.vllm_fixtures import BASE_MODEL

CONTEXTS = load_bundled()[:6]
GEN = GenerationConfig(max_new_tokens=400, temperature=0.9, top_p=0.95)


def make(tokenizer: Any, *urls: str, gen: GenerationConfig = GEN, **options: Any) -> RemoteGenerator:
    settings = {"max_retries": 3, "backoff_first_s": 0.005, "backoff_max_s": 0.02, "timeout_s": 5.0, **options}
    return RemoteGenerator(tokenizer, gen, RemoteOptions(urls=urls, model=BASE_MODEL, **settings))


def requests(n: int = 2, attempts: int = 3, step: int = 4) -> list[SampleRequest]:
    return [SampleRequest(CONTEXTS[i], "train", step, i, attempts) for i in range(n)]


def dead_url() -> str:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# ---------------------------------------------------------------- sampling


async def test_each_request_is_one_call_with_n_attempts_and_exact_ids(fake_vllm: FakeVLLM, vllm_tokenizer: Any) -> None:
    async with make(vllm_tokenizer, fake_vllm.url) as gen:
        out = await gen.generate(requests(n=2, attempts=3))

    calls = {tuple(c.body["prompt"]): c for c in fake_vllm.completions()}
    assert len(calls) == 2 and len(out) == 6
    for request in requests(n=2, attempts=3):
        body = calls[tuple(prompt_ids(vllm_tokenizer, request.context))].body  # our ids, not text
        assert body["n"] == 3 and body["model"] == BASE_MODEL
        assert (body["max_tokens"], body["temperature"], body["top_p"]) == (400, 0.9, 0.95)
        assert body["logprobs"] == 1 and body["return_tokens_as_token_ids"] is True
        assert body["stop"] == [STOP_TEXT] and body["include_stop_str_in_output"] is True
        assert body["skip_special_tokens"] is False and "top_k" not in body

    for t in out:
        choice = calls[t.prompt_ids].reply["choices"][t.attempt]
        assert list(t.completion_ids) == [int(x.removeprefix("token_id:")) for x in choice["logprobs"]["tokens"]]
        assert list(t.logprobs) == choice["logprobs"]["token_logprobs"]
        assert t.completion_text == vllm_tokenizer.decode(list(t.completion_ids), skip_special_tokens=True)
        assert t.policy_version == 0 and t.truncated is (choice["finish_reason"] == "length")
        assert (t.split, t.step) == ("train", 4)
        assert all(-4.01 <= lp < 0 for lp in t.logprobs)
    assert [(t.group, t.attempt) for t in out] == [(g, a) for g in range(2) for a in range(3)]
    ended = [t for t in out if not t.truncated]
    assert ended and all(t.completion_text.endswith(STOP_TEXT) or t.completion_ids[-1] == vllm_tokenizer.eos_token_id
                         for t in ended)
    assert gen.stats.completions == 6 and gen.stats.tokens == sum(len(t.completion_ids) for t in out)


async def test_a_completion_cut_at_max_tokens_is_truncated(fake_vllm: FakeVLLM, vllm_tokenizer: Any) -> None:
    async with make(vllm_tokenizer, fake_vllm.url, gen=GenerationConfig(max_new_tokens=7)) as gen:
        out = await gen.generate(requests(n=1, attempts=4))
    assert len(out) == 4
    assert all(t.truncated and len(t.completion_ids) == 7 and len(t.logprobs) == 7 for t in out)


async def test_requests_take_turns_over_the_servers(fake_vllm_pair: tuple[FakeVLLM, FakeVLLM],
                                                     vllm_tokenizer: Any) -> None:
    a, b = fake_vllm_pair
    async with make(vllm_tokenizer, a.url, b.url + "/v1/") as gen:
        out = await gen.generate(requests(n=6, attempts=2))
    assert len(out) == 12
    assert len(a.completions()) == 3 and len(b.completions()) == 3


async def test_requests_in_flight_are_bounded(fake_vllm: FakeVLLM, vllm_tokenizer: Any) -> None:
    fake_vllm.hold()
    async with make(vllm_tokenizer, fake_vllm.url, max_concurrency=2) as gen:
        sampling = asyncio.create_task(gen.generate(requests(n=5, attempts=1)))
        while len(fake_vllm.completions()) < 2:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)  # room for a third to arrive, were the bound broken
        assert len(fake_vllm.completions()) == 2
        fake_vllm.release()
        assert len(await sampling) == 5
    assert len(fake_vllm.completions()) == 5


async def test_429_and_500_are_retried_honouring_retry_after(fake_vllm: FakeVLLM, vllm_tokenizer: Any) -> None:
    fake_vllm.inject("429", retry_after_ms=30)
    fake_vllm.inject("500")
    async with make(vllm_tokenizer, fake_vllm.url) as gen:
        out = await gen.generate(requests(n=1, attempts=2))
    assert len(out) == 2
    assert [c.status for c in fake_vllm.completions()] == [429, 500, 200]
    assert gen.stats.retries == 2 and gen.stats.http_429 == 1 and gen.stats.requests == 3


@pytest.mark.parametrize("fault", ["malformed", "short", "mismatch", "huge"])
async def test_a_malformed_reply_is_retried_never_an_empty_trajectory(
    fake_vllm: FakeVLLM, vllm_tokenizer: Any, fault: str
) -> None:
    fake_vllm.inject(fault)  # type: ignore[arg-type]
    async with make(vllm_tokenizer, fake_vllm.url) as gen:
        out = await gen.generate(requests(n=1, attempts=3))
    assert len(out) == 3 and all(t.completion_ids for t in out)
    assert len(fake_vllm.completions()) == 2 and gen.stats.retries == 1


async def test_a_hung_server_times_out_and_the_retry_goes_to_the_next(
    fake_vllm_pair: tuple[FakeVLLM, FakeVLLM], vllm_tokenizer: Any
) -> None:
    a, b = fake_vllm_pair
    a.inject("hang", hang_s=5)
    async with make(vllm_tokenizer, a.url, b.url, timeout_s=0.3) as gen:
        out = await gen.generate(requests(n=1, attempts=2))
    assert len(out) == 2
    assert len(a.completions()) == 1 and [c.status for c in b.completions()] == [200]


async def test_an_unreachable_server_is_skipped(fake_vllm: FakeVLLM, vllm_tokenizer: Any) -> None:
    async with make(vllm_tokenizer, dead_url(), fake_vllm.url) as gen:
        out = await gen.generate(requests(n=2, attempts=1))
    assert len(out) == 2 and gen.stats.retries >= 1


async def until(condition: Any) -> None:
    """Wait for a condition the generator reaches by itself (a pause, a server back)."""
    while not condition():
        await asyncio.sleep(0.005)


async def test_a_server_down_for_a_while_pauses_generation_and_loses_nothing(
    fake_vllm: FakeVLLM, vllm_tokenizer: Any
) -> None:
    fake_vllm.outage()
    with capture_logs() as events:
        async with make(vllm_tokenizer, fake_vllm.url, max_retries=2) as gen:
            sampling = asyncio.create_task(gen.generate(requests(n=3, attempts=2)))
            await until(lambda: gen.paused)
            await until(lambda: any(e["event"] == "generator_probe_failed" for e in events))
            assert not sampling.done()  # waiting, not failed: nothing dropped, nothing scored zero
            fake_vllm.recover()
            out = await sampling
            assert not gen.paused and gen.stats.pauses == 1
    assert [(t.group, t.attempt) for t in out] == [(g, a) for g in range(3) for a in range(2)]
    assert all(t.completion_ids and t.logprobs for t in out)
    names = [e["event"] for e in events]
    paused = events[names.index("generator_paused")]
    host = fake_vllm.url.removeprefix("http://")
    assert paused["server"] == host and paused["log_level"] == "warning"
    assert paused["reason"].startswith("3 attempts in a row failed, the last: HTTP 503 from")
    (resumed,) = [e for e in events if e["event"] == "generator_resumed"]
    assert names.index("generator_paused") < names.index("generator_resumed") and resumed["paused_s"] > 0
    statuses = [c.status for c in fake_vllm.completions()]
    assert statuses.count(200) == 3 + 1 and set(statuses) == {200, 503}  # three requests and the probe


async def test_a_request_that_fails_after_its_retries_is_sent_again(
    fake_vllm_pair: tuple[FakeVLLM, FakeVLLM], vllm_tokenizer: Any
) -> None:
    a, b = fake_vllm_pair
    a.inject("500")
    b.inject("500")
    with capture_logs() as events:
        async with make(vllm_tokenizer, a.url, b.url, max_retries=1) as gen:
            out = await gen.generate(requests(n=1, attempts=3))
            assert not gen.rotation.out  # one failure each: no server had two in a row
    assert len(out) == 3
    (failed,) = [e for e in events if e["event"] == "generator_request_failed"]
    assert failed["attempts"] == 2 and failed["server"] == b.url.removeprefix("http://")
    assert [c.status for c in a.completions()] == [500, 200] and [c.status for c in b.completions()] == [500]


async def test_a_failing_server_leaves_the_rotation_and_its_share_goes_to_the_others(
    fake_vllm_pair: tuple[FakeVLLM, FakeVLLM], vllm_tokenizer: Any
) -> None:
    a, b = fake_vllm_pair
    a.outage()
    with capture_logs() as events:
        async with make(vllm_tokenizer, a.url, b.url, max_retries=1, max_concurrency=1) as gen:
            first = await gen.generate(requests(n=4, attempts=1))
            tried_on_a = len(a.completions())
            await until(lambda: any(e["event"] == "generator_probe_failed" for e in events))
            second = await gen.generate(requests(n=4, attempts=1))
            assert not gen.paused and list(gen.rotation.out) == [a.url]
    assert len(first) == len(second) == 4
    assert tried_on_a == 2  # two failures in a row (max_retries + 1), then no more requests
    assert len([c for c in a.completions() if c.status == 503]) >= tried_on_a + 1  # + the probe's
    assert [c.status for c in b.completions()] == [200] * 8
    (down,) = [e for e in events if e["event"] == "generator_server_down"]
    assert down["server"] == a.url.removeprefix("http://") and down["serving"] == 1
    assert "generator_paused" not in [e["event"] for e in events]


async def test_a_rejected_request_is_not_retried(fake_vllm: FakeVLLM, vllm_tokenizer: Any) -> None:
    fake_vllm.inject("400")
    async with make(vllm_tokenizer, fake_vllm.url) as gen:
        with pytest.raises(RemoteGeneratorError, match=r"rejected by 127\.0\.0\.1:\d+/v1/completions \(HTTP 400\): .*context length"):
            await gen.generate(requests(n=1))
    assert len(fake_vllm.completions()) == 1


async def test_stream_hands_over_a_request_as_soon_as_its_reply_is_in(
    fake_vllm_pair: tuple[FakeVLLM, FakeVLLM], vllm_tokenizer: Any
) -> None:
    a, b = fake_vllm_pair
    a.hold()  # the first request (on a) waits; the second (on b) is answered
    async with make(vllm_tokenizer, a.url, b.url) as gen:
        stream = gen.stream(requests(n=2, attempts=3))
        first = [await anext(stream) for _ in range(3)]
        assert [t.group for t in first] == [1, 1, 1] and [t.attempt for t in first] == [0, 1, 2]
        assert len(a.completions()) == 1 and a.completions()[0].status == 0  # still held
        a.release()
        rest = [t async for t in stream]
    assert [t.group for t in rest] == [0, 0, 0]


async def test_stream_raises_a_rejected_request_and_cancels_the_others(
    fake_vllm_pair: tuple[FakeVLLM, FakeVLLM], vllm_tokenizer: Any
) -> None:
    a, b = fake_vllm_pair
    a.hold()
    b.inject("400")
    async with make(vllm_tokenizer, a.url, b.url) as gen:
        with pytest.raises(RemoteGeneratorError, match=r"\(HTTP 400\)"):
            [t async for t in gen.stream(requests(n=2))]
        assert gen.adapters_in_flight == {}  # the request held on a was cancelled, not left running
        a.release()


async def test_a_stream_left_early_cancels_its_requests(fake_vllm_pair: tuple[FakeVLLM, FakeVLLM],
                                                        vllm_tokenizer: Any) -> None:
    a, b = fake_vllm_pair
    a.hold()
    async with make(vllm_tokenizer, a.url, b.url) as gen:
        stream = gen.stream(requests(n=2, attempts=1))
        await anext(stream)  # b's answer
        await stream.aclose()
        assert gen.adapters_in_flight == {}
        a.release()


async def test_a_wrong_key_stops_at_start_up_and_pauses_mid_run(vllm_tokenizer: Any) -> None:
    secret = "sk-vllm-test-key-0f3a9c2b7d-must-not-leak"
    with FakeVLLM(vllm_tokenizer, model=BASE_MODEL, api_key="the-right-key") as server:
        options = RemoteOptions(urls=(server.url,), model=BASE_MODEL, backoff_first_s=0.005, backoff_max_s=0.02)
        async with RemoteGenerator(vllm_tokenizer, GEN, options, api_key=secret) as gen:
            with pytest.raises(RemoteGeneratorError, match=r"authentication failed at .* \(HTTP 401\): check VLLM_API_KEY") as info:
                await gen.check()  # at start-up: the run stops with this line
            assert secret not in str(info.value)
            with capture_logs() as events:
                sampling = asyncio.create_task(gen.generate(requests(n=1)))
                await until(lambda: gen.paused)  # mid-run (a rotated key): the server leaves, generation waits
                sampling.cancel()
        (paused,) = [e for e in events if e["event"] == "generator_paused"]
        assert "HTTP 401" in paused["reason"] and secret not in str(events)
        assert [r.status for r in server.completions()] == [401]  # a refusal is not retried
    with FakeVLLM(vllm_tokenizer, model=BASE_MODEL, api_key=secret) as server:
        gen = RemoteGenerator(vllm_tokenizer, GEN, RemoteOptions(urls=(server.url,), model=BASE_MODEL), api_key=secret)
        async with gen:
            assert len(await gen.generate(requests(n=1, attempts=2))) == 2


async def test_check_names_a_server_that_serves_another_model(fake_vllm: FakeVLLM, vllm_tokenizer: Any) -> None:
    async with make(vllm_tokenizer, fake_vllm.url) as gen:
        await gen.check()
    wrong = RemoteGenerator(vllm_tokenizer, GEN, RemoteOptions(urls=(fake_vllm.url,), model="google/gemma-3-270m-it"))
    async with wrong:
        with pytest.raises(RemoteGeneratorError, match=r"does not serve model 'google/gemma-3-270m-it' \(it serves \['base-model'\]\)"):
            await wrong.check()
    async with make(vllm_tokenizer, dead_url()) as gone:
        with pytest.raises(RemoteGeneratorError, match="does not answer"):
            await gone.check()


# ---------------------------------------------------------------- adapters


async def test_after_a_load_requests_name_the_new_adapter(
    fake_vllm_pair: tuple[FakeVLLM, FakeVLLM], vllm_tokenizer: Any, adapter_dirs: Any
) -> None:
    a, b = fake_vllm_pair
    async with make(vllm_tokenizer, a.url, b.url) as gen:
        await gen.load_weights(1, adapter_dirs(1))
        first = await gen.generate(requests(n=2, attempts=2))
        await gen.load_weights(2, adapter_dirs(2))
        second = await gen.generate(requests(n=2, attempts=2))

    for server in (a, b):
        assert server.loads == [("policy-v1", str(adapter_dirs(1).resolve())), ("policy-v2", str(adapter_dirs(2).resolve()))]
        assert server.unloads == ["policy-v1"]  # no request named it any more
        assert [c.body["model"] for c in server.completions()] == ["policy-v1", "policy-v2"]
    assert {t.policy_version for t in first} == {1} and {t.policy_version for t in second} == {2}
    # the fake's log-probs depend on the adapter: they came from the adapter the request named
    t = second[0]
    assert t.logprobs[0] == token_logprob(str(adapter_dirs(2).resolve()), 0, t.completion_ids[0])
    assert gen.stats.loads == 2


async def test_an_adapter_in_flight_is_unloaded_only_once_idle(
    fake_vllm: FakeVLLM, vllm_tokenizer: Any, adapter_dirs: Any
) -> None:
    async with make(vllm_tokenizer, fake_vllm.url) as gen:
        await gen.load_weights(1, adapter_dirs(1))
        fake_vllm.hold()
        sampling = asyncio.create_task(gen.generate(requests(n=1, attempts=2)))
        while not fake_vllm.completions():
            await asyncio.sleep(0.005)
        await gen.load_weights(2, adapter_dirs(2))
        assert fake_vllm.unloads == []  # policy-v1 is still sampling
        assert gen.adapters_in_flight == {"policy-v1": 1}
        fake_vllm.release()
        out = await sampling
        assert gen.adapters_in_flight == {}  # a name whose count reached zero is dropped
        await gen.load_weights(3, adapter_dirs(3))
    assert {t.policy_version for t in out} == {1}
    assert sorted(fake_vllm.unloads) == ["policy-v1", "policy-v2"]
    assert set(fake_vllm.adapters) == {"policy-v3"}


async def test_a_server_refusing_an_adapter_is_skipped_until_the_probe_loads_it(
    fake_vllm_pair: tuple[FakeVLLM, FakeVLLM], vllm_tokenizer: Any, adapter_dirs: Any
) -> None:
    a, b = fake_vllm_pair
    b.inject("500", times=2, route="load")
    with capture_logs() as events:
        async with make(vllm_tokenizer, a.url, b.url, max_retries=2) as gen:
            await gen.load_weights(1, adapter_dirs(1))
            assert gen.stats.load_retries == 2 and set(b.adapters) == {"policy-v1"}  # retried: fine

            b.outage()
            await gen.load_weights(2, adapter_dirs(2))  # b refuses: out of rotation, no error
            assert list(gen.rotation.out) == [b.url] and not gen.paused
            served_by_b = len(b.completions())
            out = await gen.generate(requests(n=4, attempts=1))
            assert {t.policy_version for t in out} == {2}  # never an older adapter than the trainer's
            assert len(b.completions()) == served_by_b  # b's share went to a

            b.recover()
            await until(lambda: not gen.rotation.out)
            assert set(b.adapters) == {"policy-v1", "policy-v2"}  # the probe loaded the current one
            out = await gen.generate(requests(n=4, attempts=1))
    assert {t.policy_version for t in out} == {2}
    answered_by_b = [c.body["model"] for c in b.completions() if c.status == 200]
    assert len(answered_by_b) >= 2 and set(answered_by_b) == {"policy-v2"}  # the probe's, then its share
    assert [c.body["model"] for c in a.completions()][-6:] == ["policy-v2"] * 6
    (down,) = [e for e in events if e["event"] == "generator_server_down"]
    assert down["server"] == b.url.removeprefix("http://")
    assert re.match(r"adapter policy-v2 from .*policy-v2 not loaded: HTTP 503 from 127\.0\.0\.1:\d+", down["reason"])
    (up,) = [e for e in events if e["event"] == "generator_server_up"]
    assert up["server"] == down["server"] and up["down_s"] > 0


async def test_a_folder_no_server_can_see_pauses_generation_with_the_hint(
    fake_vllm: FakeVLLM, vllm_tokenizer: Any, tmp_path: Path
) -> None:
    with capture_logs() as events:
        async with make(vllm_tokenizer, fake_vllm.url, max_retries=1) as gen:
            await gen.load_weights(1, tmp_path / "nowhere")
            assert gen.paused and gen.current.version == 1
    (paused,) = [e for e in events if e["event"] == "generator_paused"]
    assert re.search(r"not loaded: HTTP 404 from 127\.0\.0\.1:\d+: No adapter found .*can the server read "
                     r".*generator.adapter_root", paused["reason"])


async def test_a_restarted_server_gets_the_adapter_back(fake_vllm: FakeVLLM, vllm_tokenizer: Any, adapter_dirs: Any) -> None:
    async with make(vllm_tokenizer, fake_vllm.url) as gen:
        await gen.load_weights(5, adapter_dirs(5))
        fake_vllm.restart()
        out = await gen.generate(requests(n=1, attempts=2))
    assert {t.policy_version for t in out} == {5}
    assert [c.status for c in fake_vllm.completions()] == [404, 200]
    assert [name for name, _ in fake_vllm.loads] == ["policy-v5", "policy-v5"] and gen.stats.reloads == 1


async def test_adapter_paths_are_mapped_to_the_servers_mount(fake_vllm: FakeVLLM, vllm_tokenizer: Any,
                                                              adapter_dirs: Any) -> None:
    root = adapter_dirs(1).parent
    # Here the "server's mount" is the same folder under another name (a symlink).
    mount = root.parent / "mounted"
    mount.symlink_to(root)
    async with make(vllm_tokenizer, fake_vllm.url, adapter_root=str(root), server_adapter_root=str(mount)) as gen:
        await gen.load_weights(1, adapter_dirs(1))
    assert fake_vllm.loads == [("policy-v1", str(mount / "policy-v1"))]


# ---------------------------------------------------------------- pure parts


def test_completion_request_sends_top_k_only_when_set() -> None:
    body = completion_request([2, 5, 9], 4, "policy-v3", GenerationConfig(max_new_tokens=32, top_k=20))
    assert body["prompt"] == [2, 5, 9] and body["n"] == 4 and body["model"] == "policy-v3"
    assert body["top_k"] == 20 and body["max_tokens"] == 32 and body["stream"] is False


def _reply(*choices: dict) -> dict:
    return {"choices": list(choices)}


def _choice(index: int, tokens: list[Any], logps: list[Any], finish: Any = "stop") -> dict:
    return {"index": index, "finish_reason": finish, "logprobs": {"tokens": tokens, "token_logprobs": logps}}


def test_parse_completions_orders_by_index_and_reads_ids() -> None:
    out = parse_completions(_reply(_choice(1, ["token_id:7"], [-0.5], "length"), _choice(0, ["token_id:3", "token_id:4"], [-1.0, 0.0])),
                            n=2, max_tokens=4, embedding_rows=10)
    assert [c.token_ids for c in out] == [(3, 4), (7,)]
    assert [c.finish_reason for c in out] == ["stop", "length"] and out[0].logprobs == (-1.0, 0.0)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ([], "not a JSON object"),
        (_reply(_choice(0, ["token_id:1"], [-1.0])), "1 choices for n=2"),
        (_reply(_choice(0, ["token_id:1"], [-1.0]), _choice(0, ["token_id:1"], [-1.0])), "repeated index"),
        (_reply(_choice(0, ["token_id:1"], [-1.0, -2.0]), _choice(1, ["token_id:1"], [-1.0])), "differ in length"),
        (_reply(_choice(0, ["hello"], [-1.0]), _choice(1, ["token_id:1"], [-1.0])), "return_tokens_as_token_ids"),
        (_reply(_choice(0, ["token_id:10"], [-1.0]), _choice(1, ["token_id:1"], [-1.0])), "past the model's 10 embedding rows"),
        (_reply(_choice(0, ["token_id:1"], [0.5]), _choice(1, ["token_id:1"], [-1.0])), "not a finite log-probability"),
        (_reply(_choice(0, ["token_id:1"], [None]), _choice(1, ["token_id:1"], [-1.0])), "not a number"),
        (_reply(_choice(0, [], []), _choice(1, ["token_id:1"], [-1.0])), "0 tokens"),
        (_reply(_choice(0, ["token_id:1"] * 5, [-1.0] * 5), _choice(1, ["token_id:1"], [-1.0])), "5 tokens"),
        (_reply(_choice(0, ["token_id:1"], [-1.0], "abort"), _choice(1, ["token_id:1"], [-1.0])), "finished with 'abort'"),
        (_reply({"index": 0, "finish_reason": "stop", "logprobs": None}, _choice(1, ["token_id:1"], [-1.0])), "no logprobs"),
    ],
)
def test_parse_completions_rejects_inconsistent_replies(reply: Any, reason: str) -> None:
    with pytest.raises(MalformedReply, match=reason):
        parse_completions(reply, n=2, max_tokens=4, embedding_rows=10)


def test_small_helpers() -> None:
    assert adapter_name(12) == "policy-v12"
    assert normalise_url("gpu-box:8000/v1/") == "http://gpu-box:8000"
    with pytest.raises(ConfigError, match="generator.urls: 'ftp://gpu-box' is not http"):
        normalise_url("ftp://gpu-box")
    with pytest.raises(ConfigError, match="generator.urls is empty"):
        RemoteOptions(urls=(), model=BASE_MODEL)
    assert retry_wait(0.2, 1.5) == 1.5 and retry_wait(0.7, None) == 0.7 and retry_wait(0.1, 1e9) == 300.0
    assert server_message(b'{"error": {"message": "bad"}}') == "bad"
    assert server_message(b'{"object": "error", "message": "old shape"}') == "old shape"
    assert server_message(b"plain text") == "plain text"


def test_old_adapter_folders_are_pruned(tmp_path: Path) -> None:
    for version in (1, 2, 10, 11):
        adapter_folder(tmp_path, version).mkdir()
    (tmp_path / "policy-vlatest").mkdir()  # not ours: left alone
    deleted = prune_adapter_folders(tmp_path, keep=2)
    assert deleted == [tmp_path / "policy-v1", tmp_path / "policy-v2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy-v10", "policy-v11", "policy-vlatest"]


def test_server_path_moves_a_folder_to_the_servers_mount(tmp_path: Path) -> None:
    folder = tmp_path / "adapters" / "policy-v3"
    assert server_path(folder) == str(folder.resolve())
    assert server_path(folder, str(tmp_path / "adapters"), "/adapters") == "/adapters/policy-v3"
    with pytest.raises(ConfigError, match="not under generator.adapter_root"):
        server_path(tmp_path / "elsewhere", str(tmp_path / "adapters"), "/adapters")


def test_the_fake_cuts_like_vllm(vllm_tokenizer: Any) -> None:
    tok = vllm_tokenizer
    stops = stop_token_ids(tok)
    offer = tok("<job_offer><title>Chef</title></job_offer> and more", add_special_tokens=False)["input_ids"]
    logps = [-0.1] * len(offer)
    ids, _, finish, reason = cut(tok, offer, logps, stops, [STOP_TEXT], 64)
    assert tok.decode(ids).endswith(STOP_TEXT) and (finish, reason) == ("stop", STOP_TEXT)
    ids, _, finish, reason = cut(tok, offer[:3] + [tok.eos_token_id] + offer[3:], logps + [-0.1], stops, [STOP_TEXT], 64)
    assert ids[-1] == tok.eos_token_id and len(ids) == 4 and (finish, reason) == ("stop", tok.eos_token_id)
    ids, _, finish, _ = cut(tok, offer[:3], logps[:3], stops, [STOP_TEXT], 3)
    assert (len(ids), finish) == (3, "length")


# ---------------------------------------------------------------- off-policy numerics


def test_reply_bytes_are_bounded_by_n_and_max_tokens() -> None:
    from jobrl_async.remote.reply import reply_limit

    body = orjson.dumps(_reply(*[_choice(i, ["token_id:262143"] * 512, [-12.345678901234567] * 512) for i in range(10)]))
    assert len(body) < reply_limit(10, 512)


def test_for_policy_bounds_ids_by_the_embedding_rows(vllm_tokenizer: Any) -> None:
    from types import SimpleNamespace

    # A tokenizer with ids past the model's rows (added tokens, no resize); the head is larger.
    rows = len(vllm_tokenizer) - 8
    model = SimpleNamespace(get_input_embeddings=lambda: torch.nn.Embedding(rows, 2),
                            get_output_embeddings=lambda: torch.nn.Linear(2, len(vllm_tokenizer) + 24))
    policy = SimpleNamespace(tokenizer=vllm_tokenizer, model=model)
    gen = RemoteGenerator.for_policy(policy, GEN, RemoteOptions(urls=("gpu:8000",), model=BASE_MODEL))
    assert gen.embedding_rows == rows and gen.opts.urls == ("http://gpu:8000",)
    reply = _reply(_choice(0, [f"token_id:{rows}"], [-1.0]))
    with pytest.raises(MalformedReply, match=f"token id {rows} is past the model's {rows} embedding rows"):
        parse_completions(reply, n=1, max_tokens=4, embedding_rows=gen.embedding_rows)


def test_rotation_takes_turns_over_the_servers_in_rotation() -> None:
    r = Rotation(["a", "b", "c"], max_failures=2)
    assert [r.next() for _ in range(4)] == ["a", "b", "c", "a"]
    assert r.failed("b") is False
    r.succeeded("b")  # a success breaks the run of failures
    assert r.failed("b") is False and r.failed("b") is True
    assert r.take_out("b", "two failures") is True and r.take_out("b", "again") is False
    assert [r.next() for _ in range(4)] == ["c", "a", "c", "a"] and r.out == {"b": "again"} and r.serving == 2
    r.take_out("a", "x"), r.take_out("c", "y")
    assert r.next() is None and r.serving == 0
    r.bring_back("c")
    assert r.next() == "c" and r.failed("c") is False  # back with a clean count


async def test_old_adapter_folders_are_pruned_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import threading

    for version in (1, 2, 3, 4):
        adapter_folder(tmp_path, version).mkdir()
    threads = []
    real = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: (threads.append(threading.get_ident()), real(*a, **k)))
    assert await prune_old_adapters(tmp_path, keep=2) == [tmp_path / "policy-v1", tmp_path / "policy-v2"]
    assert len(threads) == 2 and threading.get_ident() not in threads  # blocking I/O ran in a worker thread


# ---------------------------------------------------------------- with the tiny model as the engine


@pytest.mark.slow
async def test_the_tiny_model_behind_the_fake_agrees_with_the_trainer(tiny_config: Any, tmp_path: Path) -> None:
    """End to end: the adapter goes through a folder to the 'engine', whose ids and log-probs
    the trainer reproduces (same weights, same numerics: no mismatch), and not the base model's."""
    from jobrl_async.testing.samplers import ModelSampler
    from jobrl_async.policy.logprobs import sequence_logprobs
    from jobrl_async.policy.model import load_policy, save_adapter

    trainer, engine = load_policy(tiny_config), load_policy(tiny_config)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    folder = save_adapter(trainer, tmp_path / "policy-v1")
    cfg = tiny_config.generation
    with FakeVLLM(trainer.tokenizer, model="tiny", sampler=ModelSampler(engine, cfg)) as server:
        gen = RemoteGenerator.for_policy(trainer, cfg, RemoteOptions(urls=(server.url,), model="tiny"))
        async with gen:
            await gen.load_weights(1, folder)
            out = await gen.generate([SampleRequest(CONTEXTS[0], "train", 1, 0, 3)])

    assert len(out) == 3 and {t.policy_version for t in out} == {1}
    prompts, completions = [t.prompt_ids for t in out], [t.completion_ids for t in out]
    with torch.no_grad():
        ours = sequence_logprobs(trainer.model, prompts, completions, cfg.temperature, trainer.pad_id)
        with trainer.model.disable_adapter():
            base = sequence_logprobs(trainer.model, prompts, completions, cfg.temperature, trainer.pad_id)
    engine_lp = torch.nn.utils.rnn.pad_sequence([torch.tensor(t.logprobs) for t in out], batch_first=True)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(t.logprobs)) for t in out], batch_first=True)
    pad = lambda xs: torch.nn.utils.rnn.pad_sequence([x.float() for x in xs], batch_first=True)  # noqa: E731
    on = mask.bool()
    assert (engine_lp - pad(ours)).abs()[on].mean() < 1e-4
    assert (engine_lp - pad(base)).abs()[on].mean() > 1e-3  # the adapter really was loaded
    weights = importance_weight(pad(ours), engine_lp, cap=2.0).values
    assert torch.allclose(weights[on], torch.ones(int(mask.sum())), atol=1e-3)
