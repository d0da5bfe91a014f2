"""The lean decode path (generation.engine = "static") against the reference (generate()): same
tokens for a seed, log-probs a teacher-forced recompute agrees with, offers handed over as they
end, rows leaving the batch, the adapter folded in while sampling and put back after."""

from __future__ import annotations

import math

import pytest
import torch

from jobrl_async.config import Config, GenerationConfig
from jobrl_async.generation import buffers as buffers_module
from jobrl_async.generation import decode as decode_module
from jobrl_async.generation.decode import decode, merged_lora
from jobrl_async.generation.generator import LocalGenerator, SampleRequest, sample_batch
from jobrl_async.generation.sampling import TokenSampler, inverse_cdf
from jobrl_async.policy.device import Device
from jobrl_async.policy.logprobs import sequence_logprobs
from jobrl_async.policy.prompts import prompt_ids

from .test_generator import LONG, MID, SHORT

pytestmark = pytest.mark.slow


def _prompts(policy, repeat: int = 2) -> list[list[int]]:
    return [prompt_ids(policy.tokenizer, c) for c in (SHORT, LONG, MID) for _ in range(repeat)]


def _perturb(policy, scale: float = 0.05) -> None:
    """A trained-looking adapter: B != 0, so folding it in changes the weights."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn(p.shape, generator=gen) * scale)


def _teacher_forced_gap(policy, samples, temperature: float) -> float:
    with torch.no_grad():
        recomputed = sequence_logprobs(policy.model, [s.prompt_ids for s in samples],
                                       [s.completion_ids for s in samples], temperature, policy.pad_id)
    return max(float((torch.tensor(s.logprobs) - lp).abs().max()) for s, lp in zip(samples, recomputed))


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_same_tokens_as_the_reference_for_a_seed(tiny_policy, tiny_config: Config, cache: str) -> None:
    tiny_config.generation.max_new_tokens = 320  # rows end at different steps: rows leave the batch
    _perturb(tiny_policy)
    prompts = _prompts(tiny_policy)
    reference = sample_batch(tiny_policy, prompts, tiny_config.generation, seed=11)
    lean = decode(tiny_policy, prompts, tiny_config.generation, seed=11, cache=cache)
    assert len({len(s.completion_ids) for s in lean}) > 1  # they did end at different steps
    assert [s.completion_ids for s in lean] == [s.completion_ids for s in reference]
    assert [s.truncated for s in lean] == [s.truncated for s in reference]
    for a, b in zip(lean, reference):
        assert max((abs(x - y) for x, y in zip(a.logprobs, b.logprobs)), default=0.0) <= 1e-4
    assert _teacher_forced_gap(tiny_policy, lean, 1.0) <= 1e-4


def test_rows_of_one_prompt_share_its_keys_in_any_order_and_any_number(tiny_policy, tiny_config: Config,
                                                                       monkeypatch) -> None:
    """Groups of unequal sizes, interleaved, one row alone: attending over each prompt's keys once
    (shared_prefix.py) samples what the reference does with a cache row per sequence."""
    from jobrl_async.generation import shared_prefix

    calls = []
    attend = shared_prefix.PrefixStep.attend
    monkeypatch.setattr(shared_prefix.PrefixStep, "attend", lambda self, *a: calls.append(1) or attend(self, *a))
    tiny_config.generation.max_new_tokens = 300
    _perturb(tiny_policy)
    short, long, mid = _prompts(tiny_policy, repeat=1)
    prompts = [long, short, long, long, mid, short, long]
    reference = sample_batch(tiny_policy, prompts, tiny_config.generation, seed=7)
    lean = decode(tiny_policy, prompts, tiny_config.generation, seed=7)
    assert calls  # the shared-prompt attention ran
    assert len({len(s.completion_ids) for s in lean}) > 1  # rows left the groups at different steps
    assert [s.completion_ids for s in lean] == [s.completion_ids for s in reference]
    assert _teacher_forced_gap(tiny_policy, lean, 1.0) <= 1e-4


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_the_step_masks_are_what_transformers_builds(tiny_policy, tiny_config: Config, implementation: str) -> None:
    """The lean path builds each step's masks itself (bool for sdpa, additive for eager): with
    padded prompts and past the sliding window it samples what generate() does with its own."""
    base = tiny_policy.model.get_base_model()
    base.set_attn_implementation(implementation)
    try:
        assert decode_module.StepMasks.of(tiny_policy.model).window == base.config.sliding_window
        tiny_config.generation.max_new_tokens = 300
        _perturb(tiny_policy)
        prompts = _prompts(tiny_policy, repeat=1)
        reference = sample_batch(tiny_policy, prompts, tiny_config.generation, seed=5)
        lean = decode(tiny_policy, prompts, tiny_config.generation, seed=5)
        assert max(len(s.prompt_ids) + len(s.completion_ids) for s in lean) > base.config.sliding_window
        assert [s.completion_ids for s in lean] == [s.completion_ids for s in reference]
    finally:
        base.set_attn_implementation("sdpa")


def test_log_probs_agree_with_the_learner_at_a_temperature_with_truncation(tiny_policy, tiny_config: Config) -> None:
    gen = tiny_config.generation
    gen.max_new_tokens, gen.temperature, gen.top_p, gen.top_k = 300, 0.7, 0.9, 40
    _perturb(tiny_policy)
    samples = decode(tiny_policy, _prompts(tiny_policy), gen, seed=3)
    window = tiny_policy.model.get_base_model().config.sliding_window
    assert max(len(s.prompt_ids) + len(s.completion_ids) for s in samples) > window  # past the window
    assert _teacher_forced_gap(tiny_policy, samples, 0.7) <= 1e-4


def test_the_adapter_is_folded_in_while_sampling_and_put_back_bit_for_bit(tiny_policy) -> None:
    _perturb(tiny_policy)
    base = {n: p.detach().clone() for n, p in tiny_policy.model.named_parameters()}
    ids = torch.tensor([prompt_ids(tiny_policy.tokenizer, SHORT)])
    with torch.no_grad():
        unmerged = tiny_policy.model(input_ids=ids).logits
        with merged_lora(tiny_policy.model):
            merged = tiny_policy.model(input_ids=ids).logits
            changed = [n for n, p in tiny_policy.model.named_parameters() if not torch.equal(p, base[n])]
        after = tiny_policy.model(input_ids=ids).logits
    assert changed and all("base_layer" in n for n in changed)  # only base weights, and only meanwhile
    assert torch.allclose(merged, unmerged, atol=1e-4) and not torch.equal(merged, unmerged)
    assert torch.equal(after, unmerged)
    assert all(torch.equal(p, base[n]) for n, p in tiny_policy.model.named_parameters())


def test_offers_are_handed_over_as_they_end(tiny_policy, tiny_config: Config) -> None:
    tiny_config.generation.max_new_tokens = 320
    handed: list[tuple[int, int]] = []  # (row, its length), in hand-over order
    samples = decode(tiny_policy, _prompts(tiny_policy, repeat=3), tiny_config.generation, seed=5,
                     on_finished=lambda row, s: handed.append((row, len(s.completion_ids))))
    assert sorted(row for row, _ in handed) == list(range(len(samples)))  # each row once
    lengths = [length for _, length in handed]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]  # the short ones first
    assert all(samples[row] is not None and len(samples[row].completion_ids) == n for row, n in handed)


def test_the_compiled_step_samples_what_the_plain_step_samples(tiny_policy, tiny_config: Config,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path (static cache, fixed shapes, a compiled decode step) run on the CPU, with
    torch.compile's eager backend: no GPU-only branch goes untested."""
    monkeypatch.setattr(decode_module, "COMPILE_OPTIONS", {"backend": "eager"})
    tiny_config.generation.max_new_tokens = 48
    prompts = _prompts(tiny_policy)
    plain = decode(tiny_policy, prompts, tiny_config.generation, seed=2, cache="static")
    compiled = decode(tiny_policy, prompts, tiny_config.generation, seed=2, cache="static", compile_step=True)
    assert [s.completion_ids for s in compiled] == [s.completion_ids for s in plain]


async def test_the_generator_streams_offers_before_its_batch_ends(tiny_policy, tiny_config: Config) -> None:
    tiny_config.generation.max_new_tokens = 320
    device = Device("cpu")
    generator = LocalGenerator(tiny_policy, device, tiny_config.generation)
    requests = [SampleRequest(c, "train", 1, i, 3) for i, c in enumerate((SHORT, LONG, MID))]
    arrivals: list[bool] = []  # whether the device was still sampling when each offer arrived
    async for _ in generator.stream(requests):
        arrivals.append(device.locked)
    assert len(arrivals) == 9 and arrivals[0]  # the first offer came while the batch still ran
    ordered = await generator.generate(requests)
    assert [(t.group, t.attempt) for t in ordered] == [(g, a) for g in range(3) for a in range(3)]


def test_the_sampler_draws_each_token_with_its_probability() -> None:
    """Inverse-CDF sampling: over many draws the frequencies match softmax(scores / T)."""
    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5, -3.0]]).repeat(20_000, 1)
    sampler = TokenSampler(GenerationConfig(temperature=0.8), seed=1, device="cpu")
    tokens, logprobs = sampler.draw(scores, sampler.uniforms(len(scores), "cpu"))
    expected = torch.softmax(scores[0] / 0.8, dim=-1)
    counts = torch.bincount(tokens.squeeze(1), minlength=6).double()
    chi2 = float((((counts - 20_000 * expected) ** 2) / (20_000 * expected)).sum())
    assert chi2 < 20.5  # 5 degrees of freedom: p = 0.001
    assert torch.allclose(logprobs, torch.log(expected)[tokens.squeeze(1)], atol=1e-6)
    assert math.isclose(float(expected.sum()), 1.0, rel_tol=1e-6)


def test_growing_layers_hand_the_attention_what_transformers_layers_do() -> None:
    """Prefill, single tokens past a buffer's growth and past the sliding window, rows selected
    (kept and repeated) on the way: the same keys, values, lengths and mask sizes as
    DynamicLayer / DynamicSlidingWindowLayer, which concatenate."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    growing, growing_sliding = decode_module._layer_classes()
    pairs = [(DynamicLayer(), growing()), (DynamicSlidingWindowLayer(sliding_window=40), growing_sliding(40))]
    gen = torch.Generator().manual_seed(0)
    rows = 4
    for length in [30] + [1] * (buffers_module.GROW_TOKENS + 20):
        k, v = (torch.randn((rows, 2, length, 8), generator=gen) for _ in range(2))
        for theirs, ours in pairs:
            want, got = theirs.update(k, v), ours.update(k, v)
            assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
            assert theirs.get_mask_sizes(1) == ours.get_mask_sizes(1)
            assert theirs.get_seq_length() == ours.get_seq_length()
        if length == 1 and pairs[0][0].get_seq_length() in (45, 100):  # a row leaves, one repeats
            index = torch.tensor([0, 2, 2] if rows == 4 else [1, 0])
            rows = len(index)
            for theirs, ours in pairs:
                theirs.batch_select_indices(index)
                decode_module.select_rows(type("Cache", (), {"layers": [ours]})(), index)


@pytest.mark.parametrize("vocab", [7, 4096, 4100, 262_144])
def test_the_two_level_inverse_cdf_draws_what_one_cumulative_sum_draws(vocab: int) -> None:
    """Blocks then a token inside the block: the same token as the first index of the whole
    vocabulary's cumulative sum exceeding u · total, never a zero-mass one, u = 0 and u → 1 too."""
    gen = torch.Generator().manual_seed(vocab)
    weights = torch.exp(torch.randn((64, vocab), generator=gen) * 3)
    weights[:, ::3] = 0  # what top-k / top-p leave: zero mass
    weights[:, -min(vocab // 2, 70):] = 0  # a zero tail past the last block boundary
    u = torch.rand((64, 1), generator=gen, dtype=torch.float64)
    u[0], u[1] = 0.0, 1.0 - 2**-53
    cdf = weights.double().cumsum(dim=-1)
    want = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    got = inverse_cdf(weights, u)
    assert torch.equal(got, want)
    assert bool((weights.gather(1, got) > 0).all())
