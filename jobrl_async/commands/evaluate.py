"""`jobrl-async eval --checkpoint URI`: the validation score of a saved adapter.

The validation round is rebuilt exactly as the run drew it (same contexts, same requests, same
sampling seeds for that step), so a deterministic judge reproduces the score the run reported,
given the run's model, data, validation, LoRA and generation settings (pass the run's --config,
or --model). The base model is always the configured one: a checkpoint is data from a bucket,
and its adapter_config.json does not get to choose what is downloaded and run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from .. import aio
from ..config import Config, Secrets
from ..errors import DataError
from ..policy.device import configure_threads


def evaluate(args: argparse.Namespace, cfg: Config) -> int:
    configure_threads(cfg.model)
    result = aio.run(_evaluate(cfg, args.checkpoint))
    sys.stdout.flush()
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0


async def _evaluate(cfg: Config, uri: str) -> dict[str, Any]:
    import anyio.to_thread

    from ..checkpoints import load_checkpoint, scratch_dir
    from ..data import check_against_policy, load_dataset, split_dataset
    from ..policy.device import Device, resolve_device
    from ..generation.generator import LocalGenerator
    from ..judge.stage import Judge
    from ..policy.model import load_adapter, load_policy
    from ..pipeline.validation import score_round
    from ..pipeline.work import validation_contexts

    async with scratch_dir("jobrl-eval-") as tmp:
        loaded = await load_checkpoint(uri, cfg, tmp)  # verified before any other cost is paid
        dataset = await load_dataset(cfg.data.dataset, cfg.storage, cfg.data.max_records)
        split = split_dataset(dataset.contexts, cfg.data.validation_fraction, cfg.data.seed)
        contexts = validation_contexts(cfg, split.validation)
        if not contexts:
            raise DataError(f"{dataset.source}: no validation contexts (data.validation_fraction, validation.max_contexts)")
        judge = Judge(cfg, Secrets.from_env())
        try:
            if cfg.judge.mode != "stub":
                await judge.check()
            device = Device(resolve_device(cfg.model.device))
            policy = await anyio.to_thread.run_sync(load_policy, cfg, device.name)
            await anyio.to_thread.run_sync(check_against_policy, dataset, policy)  # its own special tokens
            # the configured base model; the adapter's r and alpha must fit its LoRA (else one clear error)
            await device.run(load_adapter, policy, loaded.adapter_dir)
            round_ = loaded.manifest.get("validation_round")
            step = loaded.step if round_ is None else round_  # the round that scored these weights
            result = await score_round(cfg, LocalGenerator(policy, device, cfg.generation), judge, contexts, step)
        finally:
            await judge.aclose()
    return {
        "checkpoint": loaded.uri,
        "step": loaded.step,
        "validation_round": step,
        "validation_score": result.score,
        "reported_validation_score": loaded.manifest.get("validation_score"),
        "judge_failed_share": round(result.judge_failed_share, 4),
        "trajectories": result.tally.as_dict(),
        "contexts": len(contexts),
        "attempts": cfg.validation.attempts,
        "judge": cfg.judge.mode,
        "model": cfg.model.name,
    }
