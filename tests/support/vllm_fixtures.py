"""Fake vLLM server fixtures: real HTTP on 127.0.0.1 against `jobrl_async.testing.fake_vllm`.

`vllm_tokenizer` is a small byte-level BPE built like the tiny model's (Gemma's special tokens,
chat template and XML tags as single tokens) in about a second, without building the model.
`fake_vllm` is a fresh server; `fake_vllm_pair` two of them (round robin, failover).
`adapter_dirs` makes folders that look like PEFT adapters to the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrl_async.testing.fake_vllm import FakeVLLM

BASE_MODEL = "base-model"


@pytest.fixture(scope="session")
def vllm_tokenizer() -> Any:
    from jobrl_async.data import load_bundled
    from jobrl_async.policy.tiny import tokenizer_corpus, train_tokenizer

    return train_tokenizer(tokenizer_corpus(load_bundled()[:120], seed=0), vocab_size=1024)


@pytest.fixture
def fake_vllm(vllm_tokenizer: Any) -> Iterator[FakeVLLM]:
    with FakeVLLM(vllm_tokenizer, model=BASE_MODEL) as server:
        yield server


@pytest.fixture
def fake_vllm_pair(vllm_tokenizer: Any) -> Iterator[tuple[FakeVLLM, FakeVLLM]]:
    with FakeVLLM(vllm_tokenizer, model=BASE_MODEL, seed=1) as a, FakeVLLM(vllm_tokenizer, model=BASE_MODEL, seed=2) as b:
        yield a, b


@pytest.fixture
def adapter_dirs(tmp_path: Path) -> Callable[[int], Path]:
    """`adapter_dirs(version)`: a folder holding an adapter_config.json, as save_adapter writes."""

    def make(version: int) -> Path:
        folder = tmp_path / "adapters" / f"policy-v{version}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_config.json").write_text('{"r": 8, "lora_alpha": 16}')
        (folder / "adapter_model.safetensors").write_bytes(b"")
        return folder

    return make
