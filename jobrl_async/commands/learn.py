"""`jobrl-async bench learn`: throughput of one learner step at the seed's shape.

Builds `--trajectories` trajectories (groups of `training.attempts`, 10 x 10 by default) on real
prompts of the bundled dataset, with completions of about `--max-new-tokens` random tokens,
behaviour log-probs from the current policy and varied rewards (every group carries signal),
then times one learner step after a small warm-up step, and the same step under each
`training.off_policy_correction` (`step_s_decoupled`, `step_s_behaviour`: the decoupled loss's
cost). Logs are JSON lines; the last stdout line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import sys
import time
from dataclasses import replace
from typing import Any

import orjson

from .. import aio
from ..config import Config
from ..flow.records import Context, Group, ScoredTrajectory, Trajectory, Verdict


def bench(args: argparse.Namespace, cfg: Config) -> int:
    from ..policy.device import configure_threads

    configure_threads(cfg.model)  # before torch does heavy work
    return aio.run(_bench(args, cfg))


async def _bench(args: argparse.Namespace, cfg: Config) -> int:
    import torch

    from ..data import load_bundled
    from ..policy.device import Device
    from ..learning.learner import Learner
    from ..policy.model import load_policy

    policy = load_policy(cfg)
    device = Device(str(policy.device))
    learner = Learner(policy, device, cfg.training, total_steps=2,
                      temperature=cfg.generation.temperature)
    rng = random.Random(cfg.training.seed)
    contexts = load_bundled()
    attempts = cfg.training.attempts

    warmup = _groups(policy, contexts, min(attempts, args.trajectories), attempts,
                     max(8, args.max_new_tokens // 4), rng, temperature=cfg.generation.temperature)
    await learner.step(warmup)

    groups = _groups(policy, contexts, args.trajectories, attempts, args.max_new_tokens, rng,
                     temperature=cfg.generation.temperature)
    cuda = str(policy.device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    metrics = await learner.step(groups)
    if cuda:
        torch.cuda.synchronize()
    step_s = time.perf_counter() - start

    result: dict[str, Any] = {
        "trajectories_per_s": metrics.trajectories / step_s,
        "tokens_per_s": metrics.tokens / step_s,
        "step_s": step_s,
        "trajectories": metrics.trajectories,
        "tokens": metrics.tokens,
        "micro_batch_size": cfg.training.micro_batch_size,
        "max_new_tokens": args.max_new_tokens,
        "ratio_max": metrics.ratio_max,
        "grad_norm": metrics.grad_norm,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": _describe(policy.device),
        "dtype": str(policy.dtype).removeprefix("torch."),
        "model": cfg.model.name,
        "torch_threads": torch.get_num_threads(),
    }
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    result.update(await _correction_cost(learner, groups, cuda))
    sys.stdout.flush()
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0


async def _correction_cost(learner: Any, groups: list[Group], cuda: bool) -> dict[str, Any]:
    """Seconds per step with each off-policy correction on the same batch (best of two, the
    modes interleaved): what the decoupled loss's π_old and importance weight cost."""
    import torch

    configured = learner.cfg
    best: dict[str, float] = {}
    for correction in ("decoupled", "behaviour") * 2:
        learner.cfg = replace(configured, off_policy_correction=correction)
        start = time.perf_counter()
        await learner.step(groups)
        if cuda:
            torch.cuda.synchronize()
        best[correction] = min(best.get(correction, math.inf), time.perf_counter() - start)
    learner.cfg = configured
    return {
        "step_s_decoupled": best["decoupled"],
        "step_s_behaviour": best["behaviour"],
        "decoupled_overhead": best["decoupled"] / best["behaviour"] - 1.0,
    }


def _groups(policy: Any, contexts: list[Context], n: int, attempts: int, max_tokens: int,
            rng: random.Random, *, temperature: float) -> list[Group]:
    """`n` scored trajectories in groups of `attempts`, completions of 3/4 to all of max_tokens."""
    from ..policy.prompts import prompt_ids

    tok = policy.tokenizer
    special = set(tok.all_special_ids)
    vocab = [i for i in range(len(tok)) if i not in special]
    groups: list[Group] = []
    for g in range((n + attempts - 1) // attempts):
        context = contexts[g % len(contexts)]
        prompt = tuple(prompt_ids(tok, context))
        size = min(attempts, n - g * attempts)
        completions = [tuple(rng.choices(vocab, k=rng.randint(max(1, 3 * max_tokens // 4), max_tokens)))
                       for _ in range(size)]
        logprobs = _behaviour_logprobs(policy, prompt, completions, temperature)
        members = [
            ScoredTrajectory(
                Trajectory(context=context, split="train", step=0, group=g, attempt=a,
                           prompt_ids=prompt, completion_ids=c, completion_text="", logprobs=lp,
                           truncated=len(c) == max_tokens, policy_version=policy.version),
                "scored",
                Verdict(criteria={}, reward=round(rng.uniform(0.0, 10.0), 1)),
            )
            for a, (c, lp) in enumerate(zip(completions, logprobs))
        ]
        groups.append(Group(step=0, index=g, context=context, members=members))
    return groups


def _behaviour_logprobs(policy: Any, prompt: tuple[int, ...], completions: list[tuple[int, ...]],
                        temperature: float) -> list[tuple[float, ...]]:
    import torch

    from ..policy.logprobs import sequence_logprobs

    with torch.no_grad():
        rows = sequence_logprobs(policy.model, [prompt] * len(completions), completions, temperature,
                                 policy.pad_id)
    return [tuple(r.float().cpu().tolist()) for r in rows]


def _describe(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device
