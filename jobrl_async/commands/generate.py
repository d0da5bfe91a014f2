"""`jobrl-async generate` (one offer for a context) and `jobrl-async bench generate`.

`generate --checkpoint` puts the adapter on the configured base model (`--model`, the config, or
the default): never on the one its adapter_config.json names, which is data from wherever the
checkpoint came from and must not pick a hub repository to download and run.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from .. import aio
from ..config import Config
from ..data import Dataset, check_against_policy, read_context_file
from ..errors import DataError
from ..ops.log import get_logger

# ---------------------------------------------------------------- generate


def generate(args: argparse.Namespace, cfg: Config) -> int:
    """Print the offer the policy writes for the context in `--context`."""
    context = read_context_file(Path(args.context))
    return aio.run(_generate(cfg, Dataset(f"context file {args.context}", [context]), args.checkpoint))


async def _generate(cfg: Config, source: Dataset, checkpoint: str | None) -> int:
    import anyio.to_thread

    from ..checkpoints import scratch_dir
    from ..policy.device import Device, configure_threads, resolve_device
    from ..generation.generator import LocalGenerator, SampleRequest
    from ..policy.model import load_adapter, load_policy

    configure_threads(cfg.model)
    device = Device(resolve_device(cfg.model.device))
    async with scratch_dir("jobrl-generate-") as tmp:
        adapter_dir = await _adapter_dir(checkpoint, cfg, tmp) if checkpoint else None
        policy = await anyio.to_thread.run_sync(load_policy, cfg, device.name)
        await anyio.to_thread.run_sync(check_against_policy, source, policy)  # its own special tokens
        (context,) = source.contexts
        if adapter_dir is not None:  # its r and alpha must fit the configured LoRA (else one clear error)
            await device.run(load_adapter, policy, adapter_dir)
    generator = LocalGenerator(policy, device, cfg.generation)
    (trajectory,) = await generator.generate([SampleRequest(context, "validation", 0, 0, 1)])
    get_logger("generate").info(
        "offer_generated", model=policy.base_name, checkpoint=checkpoint,
        tokens=len(trajectory.completion_ids), truncated=trajectory.truncated,
    )
    print(trajectory.completion_text)
    return 0


async def _adapter_dir(checkpoint: str, cfg: Config, tmp: Path) -> Path:
    """A local folder with PEFT adapter files: the folder given, or a verified checkpoint's."""
    from ..policy.model import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    local = checkpoint.removeprefix("file://") if checkpoint.startswith("file://") or "://" not in checkpoint else None
    if local is not None:
        folder = Path(local).expanduser()
        bare = (folder / ADAPTER_WEIGHTS).is_file() and (folder / ADAPTER_CONFIG).is_file()
        if bare and not (folder / "manifest.json").is_file():
            return folder  # an adapter as PeftModel.save_pretrained writes it
    from ..checkpoints import load_checkpoint  # checkpoints with manifests: verified first

    loaded = await load_checkpoint(checkpoint, cfg, tmp)
    return Path(loaded.adapter_dir)


# ---------------------------------------------------------------- bench generate


def bench(args: argparse.Namespace, cfg: Config) -> int:
    """Tokens/s at batch 1 and batch N, the same new tokens per sequence, on the configured engine
    and on the reference (generate()); then the time to the first finished offer of a real batch.

    The work is a training step's shape: `--batch` sequences over batch / `--attempts` contexts
    (one GRPO group per context shares its prompt), every row running `--max-new-tokens` tokens.
    Each engine runs `--repeats` times, the two interleaved, and its best run counts: on a shared
    machine other work only ever slows a run down, and interleaving exposes both to the same.
    """
    from ..data import load_bundled, split_dataset
    from ..policy.device import configure_threads
    from ..policy.model import load_policy
    from ..policy.prompts import prompt_ids

    if args.batch < 1 or args.max_new_tokens < 1 or args.attempts < 1 or args.repeats < 1:
        raise DataError("bench generate: --batch, --max-new-tokens, --attempts and --repeats must be >= 1")
    configure_threads(cfg.model)
    policy = load_policy(cfg)
    contexts = split_dataset(load_bundled(), cfg.data.validation_fraction, cfg.data.seed).validation
    prompts = [prompt_ids(policy.tokenizer, contexts[(i // args.attempts) % len(contexts)]) for i in range(args.batch)]
    engine = cfg.generation.engine
    rates: dict[tuple[int, str], float] = {}
    for name in (engine, "hf"):  # the configured engine and the reference, on the same work
        _warm_up(policy, prompts, cfg, name, args.max_new_tokens)
    for _ in range(args.repeats):
        for batch, name in ((1, engine), (args.batch, engine), (args.batch, "hf")):
            rate = _tokens_per_s(policy, prompts[:batch], cfg, name, args.max_new_tokens)
            rates[(batch, name)] = max(rate, rates.get((batch, name), 0.0))
    first = {name: min(_first_offer_s(policy, prompts, cfg, name) for _ in range(args.repeats))
             for name in (engine, "hf")}
    result = {
        "tokens_per_s_batch1": round(rates[(1, engine)], 1),
        "tokens_per_s_batch": round(rates[(args.batch, engine)], 1),
        "ratio": round(rates[(args.batch, engine)] / rates[(1, engine)], 2),
        "reference_tokens_per_s_batch": round(rates[(args.batch, "hf")], 1),
        "speedup_vs_reference": round(rates[(args.batch, engine)] / rates[(args.batch, "hf")], 2),
        "first_offer_s": round(first[engine], 3),
        "reference_first_offer_s": round(first["hf"], 3),
        "engine": engine,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "device": _describe_device(policy.device),
        "batch": args.batch,
        "attempts": args.attempts,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "model": policy.base_name,
        "dtype": str(policy.dtype).removeprefix("torch."),
        **_gpu_memory(policy.device),
    }
    sys.stdout.flush()
    print(orjson.dumps(result).decode(), flush=True)
    return 0


def _sample(policy: Any, prompts: list[Any], cfg: Config, engine: str, seed: int, *,
            max_new_tokens: int | None = None, stop: bool = False, on_finished: Any = None) -> list[Any]:
    """One micro-batch on `engine`, as the generator runs it (decode options included)."""
    from dataclasses import replace

    from ..generation.generator import sample

    gen = replace(cfg.generation, engine=engine, max_new_tokens=max_new_tokens or cfg.generation.max_new_tokens)
    return sample(policy, gen, prompts, seed, stop=stop, on_finished=on_finished)


def _warm_up(policy: Any, prompts: list[Any], cfg: Config, engine: str, tokens: int) -> None:
    """First passes pay one-off costs (allocator, kernels, compilation): at the timed shapes."""
    _sample(policy, prompts[:1], cfg, engine, 0, max_new_tokens=tokens)
    _sample(policy, prompts, cfg, engine, 0, max_new_tokens=min(tokens, 8))


def _tokens_per_s(policy: Any, prompts: list[Any], cfg: Config, engine: str, tokens: int) -> float:
    _sync(policy.device)
    start = time.perf_counter()
    _sample(policy, prompts, cfg, engine, len(prompts), max_new_tokens=tokens)
    _sync(policy.device)
    seconds = time.perf_counter() - start
    get_logger("bench").info("bench_generate", engine=engine, batch=len(prompts), new_tokens=tokens,
                             seconds=round(seconds, 3), tokens_per_s=round(len(prompts) * tokens / seconds, 1))
    return len(prompts) * tokens / seconds


def _first_offer_s(policy: Any, prompts: list[Any], cfg: Config, engine: str) -> float:
    """Seconds from a real batch's start (offers end where they end) to its first finished offer."""
    start = time.perf_counter()
    first: list[float] = []

    def finished(row: int, sample: Any) -> None:
        if not first:
            _sync(policy.device)
            first.append(time.perf_counter() - start)

    _sample(policy, prompts, cfg, engine, 1, stop=True, on_finished=finished)
    return first[0]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({torch.get_num_threads()} torch threads)"


def _gpu_memory(device: str) -> dict[str, float]:
    if not device.startswith("cuda"):
        return {}
    import torch

    return {"peak_gpu_mb": round(torch.cuda.max_memory_allocated(torch.device(device)) / 2**20, 1)}
