"""Tiny model fixtures, for any test that needs a real policy (generator, learner, pipeline...).

- `tiny_model_dir` (session): the embedded tiny model's folder, shipped in the package
  (`tiny_assets.shipped_tiny_dir()`: its files checked against their manifest; nothing is built).
- `tiny_config` (function): a fresh `Config` with `model.name = "tiny"`, CPU, fp32, and small
  generation settings (64 new tokens, micro-batches of 8, temperature 1, seed 1234). Change
  what you need on it; nothing is shared between tests.
- `tiny_policy` (function): `model.load_policy(tiny_config)`: the warm-started tiny model with a
  fresh LoRA adapter (B = 0, so it starts equal to the base model), version 0. Each test gets
  its own, so a test may train or perturb it freely.

A full offer from the tiny model is ~150-200 tokens: raise `generation.max_new_tokens` to ~320
in tests that need complete offers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobrl_async.config import Config


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from jobrl_async.policy.tiny_assets import shipped_tiny_dir

    return shipped_tiny_dir()


@pytest.fixture
def tiny_config(tiny_model_dir: Path) -> Config:
    cfg = Config()
    cfg.model.name = "tiny"
    cfg.model.device = "cpu"
    cfg.model.dtype = "float32"
    cfg.generation.max_new_tokens = 64
    cfg.generation.batch_size = 8
    cfg.generation.temperature = 1.0
    cfg.generation.seed = 1234
    return cfg


@pytest.fixture
def tiny_policy(tiny_config: Config):
    from jobrl_async.policy.model import load_policy

    return load_policy(tiny_config)


def reduced_spec(spec=None, train_steps: int = 3, vocab_size: int = 1024):
    """The tiny build with fewer steps and a smaller vocabulary (tests of the build itself)."""
    from dataclasses import replace

    from jobrl_async.policy.tiny import DEFAULT_SPEC

    return replace(spec or DEFAULT_SPEC, train_steps=train_steps, vocab_size=vocab_size, batch_size=4)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a built folder, by name: two builds compare byte for byte."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
