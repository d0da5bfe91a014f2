"""What the fake vLLM samples, and how it cuts a continuation as vLLM does.

A `Sampler` answers a `SamplingCall` with `n` (token ids, log-probs) continuations; the server
cuts each one (`cut`) after a stop token or the token that completes a stop string, else at
`max_tokens`. Two samplers: `canned_sampler` (canned job offers, log-probs derived from a hash
of (adapter, position, token), so the same tokens under the same adapter always get the same
log-probs) and `ModelSampler` (the tiny model itself, with the adapter a request names).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SamplingCall:
    """What a sampler is asked for: `n` continuations of `prompt`."""

    prompt: tuple[int, ...]
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    adapter_path: str | None  # None: the base model
    seed: int


# A sampler returns n (token ids, log-probs) continuations of at most max_tokens tokens; it may
# run past a stop: the server cuts them as vLLM does.
Sampler = Callable[[SamplingCall], list[tuple[list[int], list[float]]]]


def stop_token_ids(tokenizer: Any) -> frozenset[int]:
    """EOS and <end_of_turn>, the tokens that end a Gemma turn."""
    ids = {int(tokenizer.eos_token_id)}
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        ids.add(end_of_turn)
    return frozenset(ids)


def cut(tokenizer: Any, ids: list[int], logprobs: list[float], stop_ids: frozenset[int],
        stops: Sequence[str], max_tokens: int) -> tuple[list[int], list[float], str, Any]:
    """(ids, log-probs, finish_reason, stop_reason) as vLLM cuts a continuation.

    It stops after the first stop token or after the token that completes a stop string,
    whichever comes first, keeping it; else it ran to `max_tokens` ("length").
    """
    end, reason = len(ids), None
    for position, token in enumerate(ids):
        if token in stop_ids:
            end, reason = position + 1, token
            break
    if stops:
        # Whether a decoded prefix holds a stop string only grows with the prefix: bisect.
        def holds(k: int) -> bool:
            text = tokenizer.decode(ids[:k], skip_special_tokens=False)
            return any(s in text for s in stops)

        if holds(end):
            lo, hi = 1, end
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if holds(mid) else (mid + 1, hi)
            text = tokenizer.decode(ids[:lo], skip_special_tokens=False)
            end, reason = lo, next(s for s in stops if s in text)
    if reason is None and end >= max_tokens:
        return ids[:end], logprobs[:end], "length", None
    return ids[:end], logprobs[:end], "stop", reason


def canned_offers(count: int = 8, seed: int = 0) -> list[str]:
    """Template job offers (en and fr, with the tiny model's deliberate flaws) from the bundled data."""
    from ..data import load_bundled
    from ..policy.tiny import pool_for, sample_flaws, skill_pools, template_offer

    rng = random.Random(seed)
    contexts = load_bundled()[:60]
    pools = skill_pools(contexts)
    return [template_offer(c, rng, sample_flaws(rng), pool_for(c, pools)) for c in rng.sample(contexts, count)]


def canned_sampler(tokenizer: Any, texts: Sequence[str] | None = None) -> Sampler:
    """Continuations drawn from canned offers; every fourth lacks its closing tag and ends at EOS."""
    texts = list(texts) if texts is not None else canned_offers()
    eos = int(tokenizer.eos_token_id)
    sequences = []
    for i, text in enumerate(texts):
        if i % 4 == 3:
            text = text.replace("</job_offer>", "")
        sequences.append(tokenizer(text, add_special_tokens=False)["input_ids"] + [eos])

    def sample(call: SamplingCall) -> list[tuple[list[int], list[float]]]:
        rng = random.Random(call.seed)
        out = []
        for _ in range(call.n):
            ids = list(rng.choice(sequences))[: call.max_tokens]
            out.append((ids, [token_logprob(call.adapter_path, p, t) for p, t in enumerate(ids)]))
        return out

    return sample


def token_logprob(adapter: str | None, position: int, token: int) -> float:
    """A plausible log-prob in [-4, -0.01], the same for the same (adapter, position, token)."""
    digest = hashlib.blake2b(f"{adapter}:{position}:{token}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    return -0.01 - 3.99 * u * u  # most tokens likely, a few not


class ModelSampler:
    """Samples with a real `Policy` (the tiny model): the adapter a request names is loaded from its folder.

    Its log-probs are the in-process generator's, so a trainer recomputing them sees no mismatch.
    """

    def __init__(self, policy: Any, gen: Any) -> None:
        self.policy, self.gen = policy, gen
        self._loaded: str | None = None

    def __call__(self, call: SamplingCall) -> list[tuple[list[int], list[float]]]:
        from dataclasses import replace

        from ..generation.generator import sample_batch
        from ..policy.model import load_adapter

        gen = replace(self.gen, temperature=call.temperature, top_p=call.top_p)
        prompts = [call.prompt] * call.n
        seed = call.seed & (2**63 - 1)
        if call.adapter_path is None:
            with self.policy.model.disable_adapter():
                samples = sample_batch(self.policy, prompts, gen, seed, max_new_tokens=call.max_tokens)
        else:
            if call.adapter_path != self._loaded:
                load_adapter(self.policy, call.adapter_path)
                self._loaded = call.adapter_path
            samples = sample_batch(self.policy, prompts, gen, seed, max_new_tokens=call.max_tokens)
        return [(list(s.completion_ids), list(s.logprobs)) for s in samples]
