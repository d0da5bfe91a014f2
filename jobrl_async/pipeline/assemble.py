"""Assembling a run: data, judge, policy, generator, learner and checkpoint writer built from the
configuration, checked before any GPU time is spent, and resumed from the latest checkpoint.

Invariant: a run that cannot start leaves nothing behind (the judge's probe stops, the
checkpoint lease is released); a resumed run continues with the data order, policy version,
optimizer state, RNG and best score of its `latest`, and a new `best` must beat `best.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from ..checkpoints import CheckpointWriter, find_latest, load_checkpoint, preflight, read_pointer, restore_rng
from ..checkpoints.lease import CheckpointLease, acquire_lease
from ..config import Config, Secrets
from ..data import check_against_policy, load_dataset, split_dataset
from ..errors import CheckpointError, JobrlError
from ..flow.records import Context
from ..generation.generator import Generator, LocalGenerator
from ..judge.stage import Judge
from ..learning.learner import Learner
from ..ops.log import get_logger
from ..policy.device import Device, resolve_device
from ..policy.model import Policy, load_adapter_state, load_policy
from ..producer import total_steps
from ..storage import open_store

log = get_logger("run")


@dataclass
class Parts:
    """The built stages a run wires together."""

    cfg: Config
    policy: Policy
    device: Device
    generator: Generator
    judge: Judge
    learner: Learner
    writer: CheckpointWriter | None
    train: list[Context]
    validation: list[Context]
    adapter_root: Path | None = None  # remote generation: where adapters are published


@dataclass
class Progress:
    """Where the run is: restored from a checkpoint on resume."""

    next_step: int = 1
    best_score: float | None = None  # the best validation score so far, this run's or on record
    last_step: int = 0  # the last step the learner finished
    last_epoch: int = 0
    last_position: int = -1


async def build(cfg: Config, workdir: Path, *, checkpoints: bool = True,
                on_checkpoint: Any = None, force: bool = False) -> tuple[Parts, Progress, int]:
    """Load data, check the judge and the checkpoint location, load the policy, resume if asked."""
    dataset = await load_dataset(cfg.data.dataset, cfg.storage, cfg.data.max_records)
    split = split_dataset(dataset.contexts, cfg.data.validation_fraction, cfg.data.seed)
    total = total_steps(len(split.train), cfg.training.batch_contexts, cfg.training.epochs, cfg.pipeline.max_steps)
    if total == 0:
        raise JobrlError(f"{dataset.source}: {len(split.train)} training contexts make no full batch of "
                         f"training.batch_contexts={cfg.training.batch_contexts}")
    lease: CheckpointLease | None = None
    if checkpoints:
        await preflight(cfg.checkpoints.uri, cfg)
        # one run per checkpoints URI, held before anything there is read; the writer renews and releases it
        lease = await acquire_lease(cfg, force=force)
    judge: Judge | None = None
    try:
        judge = Judge(cfg, Secrets.from_env())
        if cfg.judge.mode != "stub":
            await judge.preflight()  # a round trip before any GPU time; a judge still down starts paused
        device = Device(resolve_device(cfg.model.device))
        policy = await anyio.to_thread.run_sync(load_policy, cfg, device.name)
        await anyio.to_thread.run_sync(check_against_policy, dataset, policy)  # its own special tokens
        generator, adapter_root = await _generator(cfg, policy, device, workdir)
        learner = Learner(policy, device, cfg.training, total, temperature=cfg.generation.temperature)
        writer = CheckpointWriter(cfg.checkpoints.uri, cfg, on_result=on_checkpoint, lease=lease) if checkpoints else None
        progress = Progress()
        if checkpoints and cfg.pipeline.resume:
            progress = await resume(cfg, policy, learner, workdir) or Progress(best_score=await best_on_record(cfg))
    except BaseException:  # nothing started is left behind: the judge's probe, the lease
        if judge is not None:
            await judge.aclose()
        if lease is not None:
            await lease.aclose()
        raise
    parts = Parts(cfg, policy, device, generator, judge, learner, writer, split.train, split.validation,
                  adapter_root)
    return parts, progress, total


async def _generator(cfg: Config, policy: Policy, device: Device, workdir: Path) -> tuple[Generator, Path | None]:
    """The in-process generator, or vLLM servers (checked before any step) and their adapter folder."""
    if cfg.generator.backend == "local":
        return LocalGenerator(policy, device, cfg.generation), None
    from ..remote import RemoteGenerator, RemoteOptions

    g = cfg.generator
    root = Path(g.adapter_root) if g.adapter_root else workdir / "adapters"
    options = RemoteOptions(
        urls=tuple(g.urls), model=g.model or cfg.model.name, max_concurrency=g.max_concurrency,
        timeout_s=g.timeout_s, max_retries=g.max_retries, backoff_max_s=g.backoff_max_s,
        adapter_root=str(root), server_adapter_root=g.server_adapter_root, unload_stale=g.unload_stale,
    )
    remote = RemoteGenerator.for_policy(policy, cfg.generation, options, api_key=Secrets.from_env().vllm_api_key)
    await remote.check()
    return remote, root


async def resume(cfg: Config, policy: Policy, learner: Learner, workdir: Path) -> Progress | None:
    """Load the newest `latest` that verifies into the policy and the learner; None: start fresh."""
    uri = await find_latest(cfg.checkpoints.uri, cfg)
    if uri is None:
        return None
    loaded = await load_checkpoint(uri, cfg, workdir / "resume")
    load_adapter_state(policy, loaded.adapter)
    if loaded.learner_state is not None:
        learner.load_state_dict(loaded.learner_state)
    restore_rng(loaded.trainer.rng)
    t = loaded.trainer
    policy.version = t.policy_version
    # A best written after this latest (then a crash) must not be beaten by a worse one later.
    recorded = await best_on_record(cfg)
    best = max((s for s in (t.best_score, recorded) if s is not None), default=None)
    if t.config_digest != cfg.digest():
        log.warning("resume_config_changed", checkpoint=uri, was=t.config_digest, now=cfg.digest())
    log.info("resumed", step=t.step, uri=uri, best_score=best, policy_version=t.policy_version)
    return Progress(next_step=t.step + 1, best_score=best, last_step=t.step,
                    last_epoch=t.epoch, last_position=t.position - 1)


async def best_on_record(cfg: Config) -> float | None:
    """The score `best.json` holds: a new best must beat it, with or without a `latest`."""
    try:
        async with open_store(cfg.checkpoints.uri, cfg.storage) as store:
            pointer = await read_pointer(store, "best")
    except CheckpointError as e:  # unreadable: as if there were none, said once
        log.warning("checkpoint_invalid", uri=cfg.checkpoints.uri, reason=str(e))
        return None
    return pointer.validation_score if pointer else None
