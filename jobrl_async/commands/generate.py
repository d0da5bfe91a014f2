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
from ..data import read_context_file
from ..errors import DataError
from ..log import get_logger

# ---------------------------------------------------------------- generate


def generate(args: argparse.Namespace, cfg: Config) -> int:
    """Print the offer the policy writes for the context in `--context`."""
    context = read_context_file(Path(args.context))
    return aio.run(_generate(cfg, context, args.checkpoint))


async def _generate(cfg: Config, context: Any, checkpoint: str | None) -> int:
    import anyio.to_thread

    from ..checkpoints import scratch_dir
    from ..device import Device, configure_threads, resolve_device
    from ..generator import LocalGenerator, SampleRequest
    from ..model import load_adapter, load_policy

    configure_threads(cfg.model)
    device = Device(resolve_device(cfg.model.device))
    async with scratch_dir("jobrl-generate-") as tmp:
        adapter_dir = await _adapter_dir(checkpoint, cfg, tmp) if checkpoint else None
        policy = await anyio.to_thread.run_sync(load_policy, cfg, device.name)
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
    from ..model import ADAPTER_CONFIG, ADAPTER_WEIGHTS

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
    """Tokens/s at batch 1 and batch N, the same number of new tokens per sequence."""
    from ..data import load_bundled, split_dataset
    from ..device import configure_threads
    from ..generator import sample_batch
    from ..model import load_policy
    from ..prompts import prompt_ids

    if args.batch < 1 or args.max_new_tokens < 1:
        raise DataError("bench generate: --batch and --max-new-tokens must be >= 1")
    configure_threads(cfg.model)
    log = get_logger("bench")
    policy = load_policy(cfg)
    contexts = split_dataset(load_bundled(), cfg.data.validation_fraction, cfg.data.seed).validation
    prompts = [prompt_ids(policy.tokenizer, contexts[i % len(contexts)]) for i in range(args.batch)]
    tokens = args.max_new_tokens

    def timed(batch: int) -> float:
        _sync(policy.device)
        start = time.perf_counter()
        sample_batch(policy, prompts[:batch], cfg.generation, seed=batch, max_new_tokens=tokens, stop=False)
        _sync(policy.device)
        return time.perf_counter() - start

    # Warm-up at the shapes to be timed: first passes pay one-off costs (allocator, kernels).
    sample_batch(policy, prompts[:1], cfg.generation, seed=0, max_new_tokens=tokens, stop=False)
    sample_batch(policy, prompts, cfg.generation, seed=0, max_new_tokens=min(tokens, 8), stop=False)
    rates = {}
    for batch in (1, args.batch):
        seconds = timed(batch)
        rates[batch] = batch * tokens / seconds
        log.info("bench_generate", batch=batch, new_tokens=tokens, seconds=round(seconds, 3),
                 tokens_per_s=round(rates[batch], 1))
    result = {
        "tokens_per_s_batch1": round(rates[1], 1),
        "tokens_per_s_batch": round(rates[args.batch], 1),
        "ratio": round(rates[args.batch] / rates[1], 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "device": _describe_device(policy.device),
        "batch": args.batch,
        "max_new_tokens": tokens,
        "model": policy.base_name,
        "dtype": str(policy.dtype).removeprefix("torch."),
        **_gpu_memory(policy.device),
    }
    sys.stdout.flush()
    print(orjson.dumps(result).decode(), flush=True)
    return 0


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
