"""The generator stage: contexts in, sampled offers out, with what the learner needs.

Each `Trajectory` records the prompt and completion token ids, the completion text, whether it
was cut at `max_new_tokens`, the policy version that sampled it and the log-prob of every
sampled token under the sampling distribution, gathered step by step (never B x T x V logits).

Log-probs are taken after temperature and before top-k / top-p: with the defaults (top_k=0,
top_p=1) that is exactly the distribution sampled from; with truncation it is the untruncated,
temperature-scaled one, which is what the learner recomputes (`policy.logprobs`), so its
importance ratio compares like with like. Tokens are drawn by `_Sampler` (see there).

Generation runs off the event loop through `Device.run` (one lock shared with the learner), one
micro-batch of `generation.batch_size` sequences per job, so the learner and the judge's I/O
interleave with it. Sampling is seeded per micro-batch (generation seed, split, step, group),
so a run is reproducible.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

from ..aio import run_ahead
from ..config import GenerationConfig
from ..flow.records import Context, Split, Trajectory
from ..ops.log import get_logger
from ..policy.device import Device
from ..policy.logprobs import left_pad
from ..policy.model import Policy, load_adapter
from ..policy.prompts import prompt_ids
from .decode import STOP_TEXT, Sample, StopCheck, decode, vocab_rows
from .sampling import TokenSampler

__all__ = ["STOP_TEXT", "LocalGenerator", "SampleRequest", "sample_batch"]



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
    """What the pipeline needs from a generation backend (in process, or vLLM servers)."""

    def stream(self, requests: Sequence[SampleRequest]) -> AsyncGenerator[Trajectory, None]:
        """Every attempt of every request, each as soon as it is sampled (in no set order)."""
        ...

    async def generate(self, requests: Sequence[SampleRequest]) -> list[Trajectory]:
        """All attempts of all requests, in request order, attempts in order."""
        ...

    async def load_weights(self, policy_version: int, adapter_dir: str | None) -> None:
        """Sample from this policy version from now on (a remote backend hot-loads the adapter)."""
        ...


async def in_request_order(trajectories: AsyncGenerator[Trajectory, None],
                           requests: Sequence[SampleRequest]) -> list[Trajectory]:
    """A stream's trajectories, collected, in request order and attempts in order."""
    order = {(r.split, r.step, r.group): i for i, r in enumerate(requests)}
    async with aclosing(trajectories):
        collected = [t async for t in trajectories]
    return sorted(collected, key=lambda t: (order[(t.split, t.step, t.group)], t.attempt))


class LocalGenerator:
    """The in-process backend; it shares its `Policy` object with the learner.

    `generation.engine`: `static` (decode.py: the lean path; finished offers are handed over as
    they end) or `hf` (transformers' generate(), the reference; a micro-batch's offers are
    handed over when its last one ends).
    """

    def __init__(self, policy: Policy, device: Device, gen: GenerationConfig) -> None:
        self.policy = policy
        self.device = device
        self.gen = gen
        self._prompts: dict[Context, tuple[int, ...]] = {}
        self._log = get_logger("generator")

    def stream(self, requests: Sequence[SampleRequest]) -> AsyncGenerator[Trajectory, None]:
        async def sample_all(emit: Callable[[Trajectory], None]) -> None:
            loop = asyncio.get_running_loop()

            def from_worker(t: Trajectory) -> None:
                loop.call_soon_threadsafe(emit, t)

            for chunk, seed in self._micro_batches(requests):
                await self.device.run(self._sample_chunk, chunk, seed, from_worker)

        return run_ahead(sample_all)

    async def generate(self, requests: Sequence[SampleRequest]) -> list[Trajectory]:
        return await in_request_order(self.stream(requests), requests)

    async def load_weights(self, policy_version: int, adapter_dir: str | None) -> None:
        # In process the learner updates the very weights we sample from: only a saved adapter
        # (an eval of a checkpoint, say) has anything to load.
        if adapter_dir is not None:
            await self.device.run(load_adapter, self.policy, adapter_dir)
            self.policy.version = policy_version

    def _micro_batches(self, requests: Sequence[SampleRequest]) -> Iterator[tuple[list[_Job], int]]:
        """`generation.batch_size` sequences a job, each seeded by where it starts in the run."""
        jobs = [(r, attempt) for r in requests for attempt in range(r.attempts)]
        size = self.gen.batch_size
        for start in range(0, len(jobs), size):
            chunk = jobs[start : start + size]
            first, attempt = chunk[0]
            yield chunk, batch_seed(self.gen.seed, first.split, first.step, first.group, attempt)

    def _sample_chunk(self, chunk: Sequence[_Job], seed: int, emit: Callable[[Trajectory], None]) -> None:
        """Runs in the device's worker thread, under its lock."""
        version = self.policy.version  # read under the lock: no learner step can be in progress
        prompts = [self._prompt(r.context) for r, _ in chunk]
        tokens = [0]

        def finished(row: int, sample: Sample) -> None:
            tokens[0] += len(sample.completion_ids)
            emit(self._trajectory(chunk[row], sample, version))

        sample(self.policy, self.gen, prompts, seed, on_finished=finished)
        self._log.debug("generated", sequences=len(chunk), tokens=tokens[0], policy_version=version,
                        engine=self.gen.engine)

    def _trajectory(self, job: _Job, s: Sample, version: int) -> Trajectory:
        r, attempt = job
        text = self.policy.tokenizer.decode(s.completion_ids, skip_special_tokens=True,
                                            clean_up_tokenization_spaces=False)
        return Trajectory(
            context=r.context, split=r.split, step=r.step, group=r.group, attempt=attempt,
            prompt_ids=s.prompt_ids, completion_ids=s.completion_ids, completion_text=text,
            logprobs=s.logprobs, truncated=s.truncated, policy_version=version,
        )

    def _prompt(self, context: Context) -> tuple[int, ...]:
        if context not in self._prompts:
            self._prompts[context] = tuple(prompt_ids(self.policy.tokenizer, context))
        return self._prompts[context]


_Job = tuple[SampleRequest, int]  # one attempt of one request


def sample(policy: Policy, gen: GenerationConfig, prompts: Sequence[Sequence[int]], seed: int, *,
           stop: bool = True, on_finished: Callable[[int, Sample], None] | None = None) -> list[Sample]:
    """One micro-batch on `generation.engine`, each row handed to `on_finished` as it ends (the
    reference engine ends them all at once). Blocking: call it from the device's worker thread."""
    if gen.engine == "hf":
        samples = sample_batch(policy, prompts, gen, seed, stop=stop)
        for row, s in enumerate(samples):
            if on_finished is not None:
                on_finished(row, s)
        return samples
    compiled = gen.compile == "on" or (gen.compile == "auto" and policy.device.startswith("cuda"))
    return decode(policy, prompts, gen, seed, stop=stop, cache="static" if compiled else "dynamic",
                  compile_step=compiled, on_finished=on_finished)


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
    stopper = _StopAt(tokenizer, width, policy.stop_ids, len(prompts), vocab_rows(model), policy.device)
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


class _Sampler:
    """generate()'s last logits processor: it draws each token itself (sampling.py) and records
    its log-prob; generate() runs greedy and takes the one-hot choice this returns."""

    def __init__(self, gen: GenerationConfig, seed: int, device: str) -> None:
        self.tokens = TokenSampler(gen, seed, device)
        self.steps: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        tokens, logprobs = self.tokens.draw(scores, self.tokens.uniforms(scores.shape[0], scores.device))
        self.steps.append(logprobs)
        choice = torch.full_like(scores, float("-inf"))
        return choice.scatter_(1, tokens, 0.0)

    def logprobs(self, rows: int, generated: int) -> Any:
        """[rows, generated] log-probs of the sampled tokens (steps a deferred stop undid dropped)."""
        import torch

        if generated == 0:
            return torch.zeros((rows, 0))
        return torch.stack(self.steps[:generated], dim=1)


class _StopAt:
    """generate()'s stopping criterion over decode.StopCheck; `ends` records each row's completion
    length (stop included) the first time it stops."""

    def __init__(self, tokenizer: Any, prompt_width: int, stop_ids: Sequence[int], rows: int, vocab_size: int,
                 device: str) -> None:
        import torch

        self.check = StopCheck(tokenizer, stop_ids, vocab_size, device)
        self.prompt_width = prompt_width
        self.rows = torch.arange(rows, device=device)
        self.ends = torch.full((rows,), -1, dtype=torch.long)
        self.done = torch.zeros(rows, dtype=torch.bool, device=device)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        completions = input_ids[:, self.prompt_width:]
        hit = self.check.hits(completions[:, -1], completions, self.rows, completions.shape[1] - 1) & ~self.done
        if bool(hit.any()):
            self.ends[hit.cpu()] = completions.shape[1]
            self.done |= hit
        return self.done.clone()
