"""The generator stage: contexts in, sampled offers out, with what the learner needs.

Each `Trajectory` records the prompt and completion token ids, the completion text, whether it
was cut at `max_new_tokens`, the policy version that sampled it and the log-prob of every
sampled token under the sampling distribution, gathered step by step (never B x T x V logits).

Log-probs are taken after temperature and before top-k / top-p: with the defaults (top_k=0,
top_p=1) that is exactly the distribution sampled from; with truncation it is the untruncated,
temperature-scaled one, which is what `sequence_logprobs` recomputes, so the learner's
importance ratio compares like with like. Tokens are drawn by `_Sampler` (see there).

Generation runs off the event loop through `Device.run` (one lock shared with the learner), one
micro-batch of `generation.batch_size` sequences per job, so the learner and the judge's I/O
interleave with it. Sampling is seeded per micro-batch (generation seed, split, step, group),
so a run is reproducible.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .config import GenerationConfig
from .device import Device
from .log import get_logger
from .model import Policy, load_adapter
from .prompts import prompt_ids
from .records import Context, Split, Trajectory

STOP_TEXT = "</job_offer>"
_STOP_TAIL_TOKENS = 24  # enough tokens to spell STOP_TEXT in any tokenizer


@dataclass(frozen=True)
class SampleRequest:
    """`attempts` samples for one context: one GRPO group (training) or validation attempts."""

    context: Context
    split: Split
    step: int
    group: int
    attempts: int

    def __post_init__(self) -> None:
        if self.step < 0 or self.group < 0 or self.attempts < 1:
            raise ValueError("step and group must be >= 0 and attempts >= 1")


class Generator(Protocol):
    """What the pipeline needs from a generation backend (in-process now; a vLLM server later)."""

    async def generate(self, requests: Sequence[SampleRequest]) -> list[Trajectory]:
        """All attempts of all requests, in request order, attempts in order."""
        ...

    async def load_weights(self, policy_version: int, adapter_dir: str | None) -> None:
        """Sample from this policy version from now on (a remote backend hot-loads the adapter)."""
        ...


@dataclass(frozen=True)
class Sample:
    """One sampled completion, before it becomes a Trajectory."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]  # up to and including the stop token, if any
    logprobs: tuple[float, ...]
    truncated: bool


class LocalGenerator:
    """The in-process transformers backend; it shares its `Policy` object with the learner."""

    def __init__(self, policy: Policy, device: Device, gen: GenerationConfig) -> None:
        self.policy = policy
        self.device = device
        self.gen = gen
        self._prompts: dict[Context, tuple[int, ...]] = {}
        self._log = get_logger("generator")

    async def generate(self, requests: Sequence[SampleRequest]) -> list[Trajectory]:
        jobs = [(r, attempt) for r in requests for attempt in range(r.attempts)]
        out: list[Trajectory] = []
        size = self.gen.batch_size
        for start in range(0, len(jobs), size):
            chunk = jobs[start : start + size]
            first, attempt = chunk[0]
            seed = batch_seed(self.gen.seed, first.split, first.step, first.group, attempt)
            out += await self.device.run(self._sample_chunk, chunk, seed)
        return out

    async def load_weights(self, policy_version: int, adapter_dir: str | None) -> None:
        # In process the learner updates the very weights we sample from: only a saved adapter
        # (an eval of a checkpoint, say) has anything to load.
        if adapter_dir is not None:
            await self.device.run(load_adapter, self.policy, adapter_dir)
            self.policy.version = policy_version

    def _sample_chunk(self, chunk: Sequence[tuple[SampleRequest, int]], seed: int) -> list[Trajectory]:
        """Runs in the device's worker thread, under its lock."""
        version = self.policy.version  # read under the lock: no learner step can be in progress
        prompts = [self._prompt(r.context) for r, _ in chunk]
        samples = sample_batch(self.policy, prompts, self.gen, seed)
        tokenizer = self.policy.tokenizer
        texts = tokenizer.batch_decode(
            [s.completion_ids for s in samples], skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        self._log.debug("generated", sequences=len(samples), tokens=sum(len(s.completion_ids) for s in samples),
                        truncated=sum(s.truncated for s in samples), policy_version=version)
        return [
            Trajectory(
                context=r.context, split=r.split, step=r.step, group=r.group, attempt=attempt,
                prompt_ids=s.prompt_ids, completion_ids=s.completion_ids, completion_text=text,
                logprobs=s.logprobs, truncated=s.truncated, policy_version=version,
            )
            for (r, attempt), s, text in zip(chunk, samples, texts)
        ]

    def _prompt(self, context: Context) -> tuple[int, ...]:
        if context not in self._prompts:
            self._prompts[context] = tuple(prompt_ids(self.policy.tokenizer, context))
        return self._prompts[context]


def batch_seed(base: int, split: str, step: int, group: int, attempt: int) -> int:
    """A stable 63-bit seed for one micro-batch (the same on every machine and run)."""
    digest = hashlib.sha256(f"{base}:{split}:{step}:{group}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# ---------------------------------------------------------------- sampling (synchronous)


def sample_batch(
    policy: Policy,
    prompts: Sequence[Sequence[int]],
    gen: GenerationConfig,
    seed: int,
    *,
    max_new_tokens: int | None = None,
    stop: bool = True,
) -> list[Sample]:
    """Sample one completion per prompt (left-padded batch) with per-token log-probs.

    `stop=False` ignores EOS and </job_offer> so every row gets exactly `max_new_tokens` new
    tokens (benchmarks). Call it from the device's worker thread: it blocks.
    """
    import torch
    from transformers import GenerationConfig as HFGenerationConfig
    from transformers import LogitsProcessorList, StoppingCriteriaList

    model, tokenizer = policy.model, policy.tokenizer
    new_tokens = max_new_tokens or gen.max_new_tokens
    ids, mask = left_pad(prompts, policy.pad_id, policy.device)
    width = ids.shape[1]
    sampler = _Sampler(gen, seed, policy.device)
    stopper = _StopAt(
        tokenizer, width, policy.stop_ids, STOP_TEXT, len(prompts), _vocab_size(model, tokenizer), policy.device
    )
    config = HFGenerationConfig(
        do_sample=False,  # `_Sampler` draws the token; generate() then takes its one-hot choice
        # Neutral values, so a model's own sampling defaults (Gemma ships top_k=64, top_p=0.95)
        # are neither filled in nor warned about; greedy decoding ignores them anyway.
        temperature=1.0,
        top_k=50,
        top_p=1.0,
        max_new_tokens=new_tokens,
        min_new_tokens=None if stop else new_tokens,
        pad_token_id=policy.pad_id,
        eos_token_id=list(policy.stop_ids),
    )
    was_training = model.training
    model.eval()  # no LoRA dropout while sampling
    try:
        with torch.no_grad():
            sequences = model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=config,
                logits_processor=LogitsProcessorList([sampler]),
                stopping_criteria=StoppingCriteriaList([stopper] if stop else []),
            )
    finally:
        model.train(was_training)
    generated = sequences[:, width:].cpu()
    logprobs = sampler.logprobs(len(prompts), generated.shape[1]).cpu()
    samples = []
    for row, prompt in enumerate(prompts):
        stopped = stop and int(stopper.ends[row]) >= 0
        end = int(stopper.ends[row]) if stopped else generated.shape[1]
        samples.append(Sample(
            prompt_ids=tuple(int(t) for t in prompt),
            completion_ids=tuple(generated[row, :end].tolist()),
            logprobs=tuple(logprobs[row, :end].tolist()),
            truncated=not stopped,
        ))
    return samples


def _vocab_size(model: Any, tokenizer: Any) -> int:
    return max(int(model.get_output_embeddings().weight.shape[0]), len(tokenizer))


class _Sampler:
    """A logits processor that draws each token itself and records its log-prob.

    generate() runs greedy; this processor, last in its list, samples from the temperature-
    scaled scores (with top-k / top-p if configured) and returns a one-hot choice, which greedy
    selection then takes. Why not generate()'s own sampling: a seeded `torch.Generator` per
    batch instead of the process-wide RNG, the log-prob recorded at the moment of sampling
    (one [B, V] row at a time, never B x T x V), and inverse-CDF sampling, ~10x cheaper than
    `torch.multinomial` over a vocabulary on CPU.
    """

    def __init__(self, gen: GenerationConfig, seed: int, device: str) -> None:
        import torch
        from transformers import TopKLogitsWarper, TopPLogitsWarper

        self.temperature = gen.temperature
        self.truncation = ([TopKLogitsWarper(gen.top_k)] if gen.top_k > 0 else []) + (
            [TopPLogitsWarper(gen.top_p)] if gen.top_p < 1.0 else []
        )
        self.generator = torch.Generator(device=device).manual_seed(seed)
        # Cumulative sums in float64 (where the device has it), so that no token's share of a
        # large vocabulary's probability mass is lost to rounding.
        self.cdf_dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        self.steps: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scaled = scores.float() / self.temperature
        logprobs = torch.log_softmax(scaled, dim=-1)
        allowed = scaled
        for warper in self.truncation:
            allowed = warper(input_ids, allowed)
        tokens = self._draw(torch.softmax(allowed, dim=-1))
        self.steps.append(logprobs.gather(1, tokens).squeeze(1))
        choice = torch.full_like(scores, float("-inf"))
        return choice.scatter_(1, tokens, 0.0)

    def _draw(self, probs: Any) -> Any:
        import torch

        cdf = probs.to(self.cdf_dtype).cumsum(dim=-1)
        u = torch.rand((probs.shape[0], 1), generator=self.generator, device=probs.device, dtype=self.cdf_dtype)
        # right=True: the first token whose cumulative mass exceeds u, never a zero-mass one.
        tokens = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
        return tokens.clamp_(max=probs.shape[1] - 1)

    def logprobs(self, rows: int, generated: int) -> Any:
        """[rows, generated] log-probs of the sampled tokens (steps a deferred stop undid dropped)."""
        import torch

        if generated == 0:
            return torch.zeros((rows, 0))
        return torch.stack(self.steps[:generated], dim=1)


class _StopAt:
    """Stopping criterion: a stop token, or the completion text has just closed STOP_TEXT.

    Records in `ends` the completion length (stop included) of each row the first time it
    stops. The text check only decodes the tail of rows whose last token contains the stop
    text's last character, and never looks into the prompt (which quotes the XML template).
    """

    def __init__(self, tokenizer: Any, prompt_width: int, stop_ids: Sequence[int], stop_text: str,
                 rows: int, vocab_size: int, device: str) -> None:
        import torch

        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.stop_text = stop_text
        self.stop_ids = torch.tensor(list(stop_ids), device=device)
        self.candidate = _tokens_containing(tokenizer, stop_text[-1], vocab_size).to(device)
        self.ends = torch.full((rows,), -1, dtype=torch.long)
        self.done = torch.zeros(rows, dtype=torch.bool, device=device)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        last = input_ids[:, -1]
        hit = torch.isin(last, self.stop_ids) & ~self.done
        maybe = self.candidate[last] & ~hit & ~self.done
        if bool(maybe.any()):
            start = max(self.prompt_width, input_ids.shape[1] - _STOP_TAIL_TOKENS)
            for row in maybe.nonzero().flatten().tolist():
                tail = self.tokenizer.decode(input_ids[row, start:].tolist(), skip_special_tokens=False)
                if self.stop_text in tail:
                    hit[row] = True
        if bool(hit.any()):
            self.ends[hit.cpu()] = input_ids.shape[1] - self.prompt_width
            self.done |= hit
        return self.done.clone()


_CANDIDATES: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], Any]] = weakref.WeakKeyDictionary()


def _tokens_containing(tokenizer: Any, char: str, vocab_size: int) -> Any:
    """Which token ids contain `char` (cached per tokenizer: Gemma's has 262k entries)."""
    import torch

    cache = _CANDIDATES.setdefault(tokenizer, {})
    if (char, vocab_size) not in cache:
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        for token, index in tokenizer.get_vocab().items():
            if char in token and index < vocab_size:
                mask[index] = True
        cache[(char, vocab_size)] = mask
    return cache[(char, vocab_size)]


# ---------------------------------------------------------------- teacher-forced recompute


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: str = "cpu") -> tuple[Any, Any]:
    """Left-padded ids and attention mask: every row ends at the right edge."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            ids[row, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[row, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def position_ids(mask: Any) -> Any:
    """Positions counted over real tokens only (as `generate` does), so padding shifts nothing."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def sequence_logprobs(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    temperature: float,
    pad_id: int = 0,
) -> list[Any]:
    """Log-probs of each completion token under the model, temperature-scaled: one forward pass.

    Batched with left padding, the attention mask and position ids that `generate` uses, so
    the result matches the sampling-time log-probs (fp32: within ~1e-5). Grad follows the
    caller: wrap in `torch.no_grad()` for old-policy log-probs, leave it on for the loss. The
    model's train/eval mode is the caller's too (LoRA dropout applies in train mode).
    """
    import torch

    rows = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
    device = next(model.parameters()).device
    ids, mask = left_pad(rows, pad_id, str(device))
    longest = max((len(c) for c in completion_ids), default=0)
    if longest == 0:
        return [torch.zeros(0, device=device) for _ in rows]
    # Every row ends at the right edge, so only the last `longest + 1` positions predict
    # completion tokens: keep the logits of those alone.
    logits = model(
        input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=longest + 1
    ).logits
    out = []
    for row, completion in enumerate(completion_ids):
        n = len(completion)
        if n == 0:
            out.append(torch.zeros(0, device=device))
            continue
        scores = logits[row, -n - 1 : -1].float() / temperature
        targets = ids[row, -n:].unsqueeze(1)
        out.append(torch.log_softmax(scores, dim=-1).gather(1, targets).squeeze(1))
    return out
