"""The generator: batched sampling with stops, log-probs that a teacher-forced pass reproduces,
off the event loop; and the `generate` / `bench generate` commands."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import torch

from jobrl_async.cli import main
from jobrl_async.config import Config
from jobrl_async.flow.records import Context
from jobrl_async.generation.generator import (
    STOP_TEXT,
    LocalGenerator,
    SampleRequest,
    sample_batch,
)
from jobrl_async.policy.device import Device
from jobrl_async.policy.logprobs import left_pad, position_ids, sequence_logprobs
from jobrl_async.policy.model import save_adapter
from jobrl_async.policy.prompts import prompt_ids

SHORT = Context("Welder", "en", ("Grinding", "MIG", "Safety"))
LONG = Context(
    "Responsable de la maintenance industrielle et des installations techniques",
    "fr",
    ("Maintenance préventive", "Gestion de projet", "Automatismes industriels", "GMAO", "Habilitation électrique"),
    "Industrie manufacturière",
)
MID = Context("Data Scientist", "en", ("Python", "SQL", "Machine Learning", "Statistics"), "Tech")


def _requests(step: int = 0, attempts: int = 2, split: str = "train") -> list[SampleRequest]:
    return [SampleRequest(c, split, step, i, attempts) for i, c in enumerate([SHORT, LONG, MID])]


def _recompute(policy, trajectories, temperature: float) -> list[torch.Tensor]:
    with torch.no_grad():
        return sequence_logprobs(
            policy.model, [t.prompt_ids for t in trajectories], [t.completion_ids for t in trajectories],
            temperature, policy.pad_id,
        )


# ---------------------------------------------------------------- pure helpers


def test_sample_request_is_validated() -> None:
    with pytest.raises(ValueError):
        SampleRequest(SHORT, "train", 0, 0, 0)
    with pytest.raises(ValueError):
        SampleRequest(SHORT, "train", -1, 0, 1)


def test_left_padding_and_positions() -> None:
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert position_ids(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


# ---------------------------------------------------------------- shapes, stops, seeds


async def test_batch_shapes_order_and_bookkeeping(tiny_policy, tiny_config: Config) -> None:
    tiny_config.generation.batch_size = 4  # 6 sequences -> 2 device jobs
    device = Device("cpu")
    tiny_policy.version = 3
    trajectories = await LocalGenerator(tiny_policy, device, tiny_config.generation).generate(_requests(step=5))
    assert device.jobs == 2
    assert [(t.context, t.group, t.attempt) for t in trajectories] == [
        (c, g, a) for g, c in enumerate([SHORT, LONG, MID]) for a in range(2)
    ]
    tok = tiny_policy.tokenizer
    for t in trajectories:
        assert t.step == 5 and t.split == "train" and t.policy_version == 3
        assert list(t.prompt_ids) == prompt_ids(tok, t.context)  # unpadded
        assert 1 <= len(t.completion_ids) <= tiny_config.generation.max_new_tokens
        assert len(t.logprobs) == len(t.completion_ids) and all(lp <= 0 for lp in t.logprobs)
        assert tok.pad_token_id not in t.completion_ids[:-1]


async def test_stops_at_the_closing_tag_or_eos_and_flags_truncation(tiny_policy, tiny_config: Config) -> None:
    tiny_config.generation.max_new_tokens = 320
    tiny_config.generation.batch_size = 12
    tok = tiny_policy.tokenizer
    generator = LocalGenerator(tiny_policy, Device("cpu"), tiny_config.generation)
    trajectories = await generator.generate(_requests(attempts=4))
    finished = [t for t in trajectories if not t.truncated]
    assert finished, "the warm-started model closes its offers"
    for t in finished:
        last = t.completion_ids[-1]
        assert last in tiny_policy.stop_ids or t.completion_text.endswith(STOP_TEXT)
        assert STOP_TEXT not in t.completion_text[: -len(STOP_TEXT)]  # nothing after the first close
        assert tok.pad_token_id not in t.completion_ids
    for t in trajectories:
        if t.truncated:
            assert len(t.completion_ids) == 320

    tiny_config.generation.max_new_tokens = 8
    short = await LocalGenerator(tiny_policy, Device("cpu"), tiny_config.generation).generate(_requests())
    assert all(t.truncated and len(t.completion_ids) == 8 for t in short)


def test_stop_false_gives_every_row_the_same_length(tiny_policy, tiny_config: Config) -> None:
    prompts = [prompt_ids(tiny_policy.tokenizer, c) for c in (SHORT, LONG)]
    samples = sample_batch(tiny_policy, prompts, tiny_config.generation, seed=1, max_new_tokens=40, stop=False)
    assert [len(s.completion_ids) for s in samples] == [40, 40] and all(s.truncated for s in samples)


async def test_sampling_is_seeded(tiny_policy, tiny_config: Config) -> None:
    generator = LocalGenerator(tiny_policy, Device("cpu"), tiny_config.generation)
    a = await generator.generate(_requests(step=1))
    b = await generator.generate(_requests(step=1))
    c = await generator.generate(_requests(step=2))
    assert [t.completion_ids for t in a] == [t.completion_ids for t in b]
    assert [t.logprobs for t in a] == [t.logprobs for t in b]
    assert [t.completion_ids for t in a] != [t.completion_ids for t in c]
    assert len({t.completion_ids for t in a}) > 1  # attempts of one group differ


# ---------------------------------------------------------------- log-probs


@pytest.mark.parametrize("temperature", [1.0, 0.7])
async def test_sampling_logprobs_match_teacher_forced_recompute(
    tiny_policy, tiny_config: Config, temperature: float
) -> None:
    # Prompts of different lengths (left padding) and completions long enough to pass the
    # sliding window of the sliding-attention layers.
    tiny_config.generation.max_new_tokens = 300
    tiny_config.generation.temperature = temperature
    tiny_config.generation.batch_size = 6
    trajectories = await LocalGenerator(tiny_policy, Device("cpu"), tiny_config.generation).generate(_requests())
    assert len({len(t.prompt_ids) for t in trajectories}) == 3
    window = tiny_policy.model.get_base_model().config.sliding_window
    assert max(len(t.prompt_ids) + len(t.completion_ids) for t in trajectories) > window
    for t, lp in zip(trajectories, _recompute(tiny_policy, trajectories, temperature)):
        assert (torch.tensor(t.logprobs) - lp).abs().max().item() <= 1e-4


async def test_with_top_p_the_recorded_logprobs_are_the_untruncated_ones(tiny_policy, tiny_config: Config) -> None:
    tiny_config.generation.top_p = 0.8
    tiny_config.generation.top_k = 20
    trajectories = await LocalGenerator(tiny_policy, Device("cpu"), tiny_config.generation).generate(_requests())
    for t, lp in zip(trajectories, _recompute(tiny_policy, trajectories, 1.0)):
        assert (torch.tensor(t.logprobs) - lp).abs().max().item() <= 1e-4


async def test_the_models_own_sampling_defaults_are_ignored(tiny_policy, tiny_config: Config) -> None:
    # gemma-3-270m-it ships do_sample/top_k/top_p defaults in generation_config.json: ours rule.
    defaults = tiny_policy.model.generation_config
    defaults.do_sample, defaults.top_k, defaults.top_p, defaults.temperature = True, 3, 0.5, 0.3
    trajectories = await LocalGenerator(tiny_policy, Device("cpu"), tiny_config.generation).generate(_requests())
    for t, lp in zip(trajectories, _recompute(tiny_policy, trajectories, 1.0)):
        assert (torch.tensor(t.logprobs) - lp).abs().max().item() <= 1e-4
    assert min(min(t.logprobs) for t in trajectories) < -1.0  # not a top-3, T=0.3 sample


def test_recompute_carries_grad_for_the_learner(tiny_policy) -> None:
    tok = tiny_policy.tokenizer
    completion = tok("<job_offer>\n  <title>Welder</title>", add_special_tokens=False)["input_ids"]
    (lp,) = sequence_logprobs(tiny_policy.model, [prompt_ids(tok, SHORT)], [completion], 1.0)
    assert lp.shape == (len(completion),) and lp.requires_grad
    lp.sum().backward()
    grads = [p.grad for n, p in tiny_policy.model.named_parameters() if "lora_B" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


async def test_generation_follows_the_adapter(tiny_policy, tiny_config: Config, tmp_path: Path) -> None:
    generator = LocalGenerator(tiny_policy, Device("cpu"), tiny_config.generation)
    before = await generator.generate(_requests())
    with torch.no_grad():
        for name, p in tiny_policy.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    folder = save_adapter(tiny_policy, tmp_path / "adapter")
    after = await generator.generate(_requests())
    assert [t.completion_ids for t in before] != [t.completion_ids for t in after]

    # load_weights: a saved adapter replaces the weights and sets the version.
    with torch.no_grad():
        for name, p in tiny_policy.model.named_parameters():
            if "lora_B" in name:
                p.zero_()
    await generator.load_weights(7, str(folder))
    again = await generator.generate(_requests())
    assert [t.completion_ids for t in again] == [t.completion_ids for t in after]
    assert {t.policy_version for t in again} == {7}


# ---------------------------------------------------------------- off the event loop


async def test_event_loop_stays_responsive_while_a_batch_generates(tiny_policy, tiny_config: Config) -> None:
    tiny_config.generation.max_new_tokens = 200
    tiny_config.generation.batch_size = 32
    generator = LocalGenerator(tiny_policy, Device("cpu"), tiny_config.generation)
    requests = [SampleRequest(c, "train", 0, i, 8) for i, c in enumerate([SHORT, LONG, MID, SHORT])]
    worst = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - start - 0.01)

    tick = asyncio.create_task(ticker())
    start = time.perf_counter()
    batches = 0
    while time.perf_counter() - start < 1.5:  # long enough for the check to mean something
        await generator.generate(requests)
        batches += 1
    took = time.perf_counter() - start
    done.set()
    await tick
    # On the loop, a batch would stall it for the whole batch; off it, only the scheduler's noise
    # (another test's torch threads on a 2-core machine) delays a tick: half a batch tells them apart.
    batch_s = took / batches
    assert worst < max(0.25, 0.5 * batch_s), f"the loop stalled {worst:.3f} s while {batches} batches took {took:.1f} s"


# ---------------------------------------------------------------- commands


@pytest.fixture(autouse=True)
def _logging_back_to_default():
    """`main()` points structlog at the captured stdout, which pytest closes after the test."""
    yield
    import structlog

    structlog.reset_defaults()


def test_generate_command_prints_an_offer(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    record = tmp_path / "context.json"
    record.write_text(json.dumps({"context": MID.as_dict()}))
    assert main(["generate", "--context", str(record), "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "<job_offer>" in out

    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(SHORT.as_dict()))
    assert main(["generate", "--context", str(bare), "--model", "tiny"]) == 0


def test_generate_command_with_an_adapter_folder(tiny_policy, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = save_adapter(tiny_policy, tmp_path / "adapter")
    record = tmp_path / "context.json"
    record.write_text(json.dumps(SHORT.as_dict()))
    # The base model is the configured one, never the adapter's.
    assert main(["generate", "--context", str(record), "--checkpoint", str(folder), "--model", "tiny"]) == 0
    assert "<job_offer>" in capsys.readouterr().out


def test_generate_command_rejects_a_bad_context_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"context": {"job_title": "Welder", "language": "de", "skills": ["x"]}}))
    assert main(["generate", "--context", str(bad), "--model", "tiny"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jobrl-async: data:") and str(bad) in err and "language" in err
    assert main(["generate", "--context", str(tmp_path / "missing.json"), "--model", "tiny"]) == 1
    assert "missing.json" in capsys.readouterr().err


def test_bench_generate_prints_one_json_object_last(tiny_model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "generate", "--batch", "4", "--max-new-tokens", "8", "--repeats", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["repeats"] == 2 and result["speedup_vs_reference"] > 0
    assert {"tokens_per_s_batch1", "tokens_per_s_batch", "ratio", "peak_rss_mb", "device"} <= result.keys()
    assert result["batch"] == 4 and result["max_new_tokens"] == 8 and result["model"] == "tiny"
    assert result["tokens_per_s_batch"] > 0 and result["ratio"] > 0
