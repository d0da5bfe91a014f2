"""Checkpoints: the writer stage, pointers and retention, verification, resume and listing.

Every storage test runs against a local path, file:// and s3:// (moto's server on loopback).
Checkpoint files are untrusted when read back: the tests below craft hostile ones.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import orjson
import pytest
import structlog
import torch
from structlog.testing import capture_logs

from jobrl_async import cli
from jobrl_async.checkpoints import (
    ADAPTER,
    ADAPTER_CONFIG,
    LEARNER_FILES,
    LEARNER_JSON,
    LEARNER_TENSORS,
    MANIFEST,
    CheckpointInfo,
    CheckpointWriter,
    Folder,
    Job,
    ObsoleteCheckpoint,
    PendingQueue,
    SaveRequest,
    TrainerState,
    capture_rng,
    find_latest,
    folders_from_listing,
    folders_to_delete,
    list_checkpoints,
    load_checkpoint,
    manifest_bytes,
    parse_manifest,
    parse_pointer,
    preflight,
    restore_rng,
    split_checkpoint_uri,
)
from jobrl_async.commands.checkpoints import escape_controls, human_size, render_table
from jobrl_async.config import Config
from jobrl_async.errors import CheckpointError, ModelError, StorageError
from jobrl_async.storage import ObjectInfo, Store, open_store
from tests.support.s3 import S3Env


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    """`cli.main` points logging at capsys's stream; later tests must not write to it."""
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


def make_cfg(keep_latest: int = 2, max_pending: int = 2, max_attempts: int = 8) -> Config:
    cfg = Config()
    cfg.checkpoints.keep_latest = keep_latest
    cfg.checkpoints.max_pending = max_pending
    cfg.checkpoints.max_attempts = max_attempts
    return cfg


def trainer_state(step: int, best: float | None = None) -> TrainerState:
    return TrainerState(step=step, epoch=0, position=step, policy_version=step, best_score=best,
                        config_digest="d1g3st", rng=capture_rng())


def request(kind: str, step: int, score: float | None = None) -> SaveRequest:
    """A small synthetic checkpoint; the values depend on the step, so folders differ."""
    gen = torch.Generator().manual_seed(step)
    adapter = {f"base_model.model.layers.0.q_proj.lora_{ab}.weight": torch.randn(4, 8, generator=gen)
               for ab in "AB"}
    learner = None
    if kind == "latest":
        learner = {"optimizer": {"state": {0: {"step": torch.tensor(float(step)),
                                               "exp_avg": torch.randn(4, 8, generator=gen)}},
                                 "param_groups": [{"lr": 1e-3, "params": [0]}]},
                   "scheduler": {"last_epoch": step}, "version": step}
    return SaveRequest(kind, step, score, adapter, {"r": 4, "target_modules": {"q_proj"}}, learner,
                       trainer_state(step, score))


class FaultyStore:
    """A store that can fail uploads from the Nth call on, or those under a prefix, with a given
    error, or hold them at a gate."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.uploads = 0
        self.fail_from: int | None = None
        self.fail_under: str | None = None
        self.error: Callable[[str], BaseException] = lambda uri: StorageError(f"cannot upload to {uri}: injected failure")
        self.gate: asyncio.Event | None = None
        self.waiting = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def upload_file(self, key: str, local_path: Any) -> None:
        self.uploads += 1
        if self.gate is not None:
            self.waiting += 1
            await self.gate.wait()
        failing = self.fail_from is not None and self.uploads >= self.fail_from
        if failing or (self.fail_under is not None and key.startswith(self.fail_under)):
            raise self.error(self.inner.uri(key))
        await self.inner.upload_file(key, local_path)


@asynccontextmanager
async def running(writer: CheckpointWriter, timeout: float = 60.0) -> AsyncIterator[CheckpointWriter]:
    task = asyncio.create_task(writer.run())
    try:
        yield writer
    finally:
        await writer.close(timeout)
        await task


async def until(condition: Callable[[], bool], limit_s: float = 30.0) -> None:
    """Wait for the writer to get somewhere (the bound only keeps a broken test from hanging)."""
    with anyio.fail_after(limit_s):
        while not condition():
            await asyncio.sleep(0.01)


async def write(root_uri: str, cfg: Config, *reqs: SaveRequest) -> CheckpointWriter:
    """Write each request in turn (waiting for each, so no supersede rule applies)."""
    writer = CheckpointWriter(root_uri, cfg)
    async with running(writer):
        for n, req in enumerate(reqs, 1):
            writer.submit(req)
            await until(lambda n=n: writer.stats.written + writer.stats.superseded >= n)
    return writer


async def pointer(root_uri: str, kind: str) -> dict | None:
    async with open_store(root_uri) as store:
        if not await store.exists(f"{kind}.json"):
            return None
        return orjson.loads(await store.read_bytes(f"{kind}.json"))


async def folder_names(root_uri: str) -> list[str]:
    async with open_store(root_uri) as store:
        return sorted({o.key.split("/")[0] for o in await store.list() if "/" in o.key})


# ---------------------------------------------------------------- round trip with a real peft model


@pytest.fixture(scope="module")
def tiny_peft() -> tuple[Any, dict[str, torch.Tensor], Any]:
    """A 2-layer Gemma 3 with LoRA on q/v (B non-zero, so the adapter changes the output)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
        layer_types=["sliding_attention", "full_attention"], sliding_window=16,
    )
    torch.manual_seed(0)
    base = Gemma3ForCausalLM(config).eval()
    base_state = copy.deepcopy(base.state_dict())
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    return model, base_state, config


def fresh_base(base_state: dict, config: Any) -> Any:
    from transformers import Gemma3ForCausalLM

    base = Gemma3ForCausalLM(config).eval()
    base.load_state_dict(base_state)
    return base


async def test_round_trip_restores_adapter_optimizer_and_trainer_state(
    root_uri: str, tmp_path: Path, tiny_peft: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peft import PeftModel, get_peft_model_state_dict

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # peft would look "tiny-gemma" up on the Hub

    model, base_state, config = tiny_peft
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    ids = torch.tensor([[1, 5, 9, 3, 7, 2]])
    model.train()
    model(input_ids=ids).logits.pow(2).mean().backward()
    optimizer.step()
    scheduler.step()
    model.eval()
    adapter = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, save_embedding_layers=False).items()}
    adapter_config = model.peft_config["default"].to_dict() | {"base_model_name_or_path": "tiny-gemma"}
    learner = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "version": 1}
    state = trainer_state(7, best=6.5)
    cfg = make_cfg()

    await write(root_uri, cfg, SaveRequest("latest", 7, 6.5, adapter, adapter_config, learner, state))

    found = await find_latest(root_uri, cfg)
    assert found is not None and found.endswith("step-000007")
    loaded = await load_checkpoint(found, cfg, tmp_path / "dl")
    assert loaded.step == 7 and loaded.trainer == state
    assert loaded.adapter.keys() == adapter.keys()
    assert all(torch.equal(loaded.adapter[k], adapter[k]) for k in adapter)
    assert loaded.adapter_config["base_model_name_or_path"] == "tiny-gemma"

    # the optimizer state loads into a fresh optimizer and equals the saved one, tensor for tensor
    fresh = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone()) for p in params], lr=1e-2)
    fresh.load_state_dict(loaded.learner_state["optimizer"])
    saved, restored = optimizer.state_dict()["state"], fresh.state_dict()["state"]
    assert saved.keys() == restored.keys() and len(saved) == len(params)
    for i in saved:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(saved[i][name], restored[i][name])
    assert loaded.learner_state["scheduler"] == scheduler.state_dict()

    # peft loads the folder as an adapter: same weights, same logits
    reloaded = PeftModel.from_pretrained(fresh_base(base_state, config), loaded.adapter_dir).eval()
    again = get_peft_model_state_dict(reloaded, save_embedding_layers=False)
    assert all(torch.equal(again[k], adapter[k]) for k in adapter)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_rng_state_survives_json_and_restores_every_generator() -> None:
    rng = orjson.loads(orjson.dumps(capture_rng()))
    first = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng(rng)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_malformed_rng_state_is_a_checkpoint_error() -> None:
    rng = capture_rng()
    rng["torch"] = "bm90IGEgc3RhdGU="  # valid base64, wrong length for a torch RNG state
    with pytest.raises(CheckpointError, match="RNG state"):
        restore_rng(rng)


@pytest.mark.parametrize("craft", [
    lambda rng: rng["python"].__setitem__("state", [2**70] * len(rng["python"]["state"])),
    lambda rng: rng["python"].__setitem__("state", [-1] * len(rng["python"]["state"])),
    lambda rng: rng["numpy"].__setitem__("pos", 2**70),
    lambda rng: rng["numpy"].__setitem__("has_gauss", -2**70),
])
def test_an_rng_state_past_cs_integer_range_is_refused_not_a_crash(craft: Any) -> None:
    rng = orjson.loads(orjson.dumps(capture_rng()))
    craft(rng)
    with pytest.raises(CheckpointError, match=r"RNG state is malformed \(OverflowError"):
        restore_rng(rng)


@pytest.mark.parametrize("command", ["eval", "generate"])
def test_eval_and_generate_refuse_text_holding_the_models_own_tokens(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture, tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `<skill>` is no Gemma control token (the dataset loads) but an added token of the model's tokenizer
    context = {"job_title": "Chef", "language": "en", "skills": ["Cuisine", "Sauces <skill>", "Hygiene"]}
    dataset = tmp_path / "data.json"
    dataset.write_text(orjson.dumps([context | {"job_title": f"Chef {i}"} for i in range(20)]).decode())
    (tmp_path / "context.json").write_text(orjson.dumps(context).decode())
    root = str(tmp_path / "ckpt")
    asyncio.run(write(root, make_cfg(), request("best", 1, 5.0)))
    monkeypatch.setenv("JOBRL_DATA__DATASET", str(dataset))
    args = {"eval": ["eval", "--checkpoint", root, "--judge", "stub"],
            "generate": ["generate", "--context", str(tmp_path / "context.json")]}[command]
    assert cli.main([*args, "--model", "tiny"]) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # the lines before: the log's own events
    assert last.startswith("jobrl-async: data:") and "'<skill>', an added token of the model's tokenizer" in last


def test_trainer_state_validation_names_the_field() -> None:
    state = trainer_state(3)
    good = orjson.loads(orjson.dumps(state.to_dict()))
    assert TrainerState.from_dict(good) == state
    with pytest.raises(CheckpointError, match="'position'"):
        TrainerState.from_dict(good | {"position": -1})
    with pytest.raises(CheckpointError, match="'best_score'"):
        TrainerState.from_dict(good | {"best_score": "high"})


# ---------------------------------------------------------------- pointers, layout, retention


async def test_best_and_latest_pointers_and_root_loads_best(root_uri: str, tmp_path: Path) -> None:
    cfg = make_cfg(keep_latest=3)
    await write(root_uri, cfg, request("latest", 1), request("best", 2, 7.5), request("latest", 3))

    best, latest = await pointer(root_uri, "best"), await pointer(root_uri, "latest")
    assert best["path"] == "step-000002" and best["step"] == 2 and best["validation_score"] == 7.5
    assert latest["path"] == "step-000003" and latest["step"] == 3 and latest["time"]

    loaded = await load_checkpoint(root_uri, cfg, tmp_path / "best")  # the root means best
    assert loaded.step == 2 and loaded.learner_state is None and loaded.manifest["kind"] == "best"
    listed = await list_checkpoints(root_uri, cfg)
    assert [(i.step, i.kind, i.is_best, i.is_latest) for i in listed] == [
        (1, "latest", False, False), (2, "best", True, False), (3, "latest", False, True),
    ]
    assert listed[1].validation_score == 7.5 and all(i.size > 0 and i.time for i in listed)


async def test_best_and_latest_of_one_step_share_one_folder(root_uri: str) -> None:
    cfg = make_cfg()
    writer = CheckpointWriter(root_uri, cfg)
    writer.submit(request("best", 4, 8.0))  # queued together before run(): they merge
    writer.submit(request("latest", 4))
    async with running(writer):
        await until(lambda: writer.stats.written == 1)
    assert await folder_names(root_uri) == ["step-000004"]
    assert (await pointer(root_uri, "best"))["path"] == (await pointer(root_uri, "latest"))["path"]
    (info,) = await list_checkpoints(root_uri, cfg)
    assert info.is_best and info.is_latest and info.kind == "latest" and info.validation_score == 8.0


async def test_latest_after_its_best_was_written_adds_to_the_folder(root_uri: str, tmp_path: Path) -> None:
    cfg = make_cfg()
    writer = CheckpointWriter(root_uri, cfg)
    async with running(writer):
        writer.submit(request("best", 5, 9.0))
        await until(lambda: writer.stats.written == 1)
        async with open_store(root_uri) as store:
            adapter_before = await store.read_bytes(f"step-000005/{ADAPTER}")
        writer.submit(request("latest", 5))
        await until(lambda: writer.stats.written == 2)
    assert await folder_names(root_uri) == ["step-000005"]
    loaded = await load_checkpoint(f"{root_uri}/step-000005", cfg, tmp_path / "dl")
    assert loaded.learner_state is not None and loaded.manifest["kind"] == "latest"
    assert loaded.manifest["validation_score"] == 9.0
    assert (tmp_path / "dl" / ADAPTER).read_bytes() == adapter_before  # the best's files untouched


async def test_best_after_its_latest_was_written_only_moves_the_pointer(root_uri: str) -> None:
    cfg = make_cfg()
    store = FaultyStore(open_store(root_uri, cfg.storage))
    writer = CheckpointWriter(root_uri, cfg, store=store)
    async with running(writer):
        writer.submit(request("latest", 6))
        await until(lambda: writer.stats.written == 1)
        uploads = store.uploads
        writer.submit(request("best", 6, 4.5))  # validation of step 6 finished later
        await until(lambda: writer.stats.written == 2)
    await store.inner.aclose()
    assert store.uploads == uploads  # nothing re-uploaded: the folder already has the weights
    (info,) = await list_checkpoints(root_uri, cfg)
    assert (info.step, info.is_best, info.is_latest, info.kind, info.validation_score) == (6, True, True, "latest", 4.5)


async def test_retention_keeps_best_and_the_last_k_latest(root_uri: str) -> None:
    cfg = make_cfg(keep_latest=2)
    writer = CheckpointWriter(root_uri, cfg)
    async with running(writer):
        for n, req in enumerate([request("latest", 1), request("best", 2, 5.0), request("latest", 3),
                                 request("latest", 4), request("latest", 5)], 1):
            writer.submit(req)
            await until(lambda n=n: writer.stats.written == n)
        assert await folder_names(root_uri) == ["step-000002", "step-000004", "step-000005"]
        writer.submit(request("best", 6, 6.0))  # the old best goes once the pointer moved
        await until(lambda: writer.stats.written == 6)
        assert await folder_names(root_uri) == ["step-000004", "step-000005", "step-000006"]
        writer.submit(request("latest", 7))
        await until(lambda: writer.stats.written == 7)
    assert await folder_names(root_uri) == ["step-000005", "step-000006", "step-000007"]


async def test_a_new_run_never_rewrites_a_complete_folder(root_uri: str) -> None:
    cfg = make_cfg()
    await write(root_uri, cfg, request("best", 3, 4.0))
    await write(root_uri, cfg, request("latest", 3))  # another process, same step
    assert await folder_names(root_uri) == ["step-000003", "step-000003-1"]
    assert (await pointer(root_uri, "best"))["path"] == "step-000003"
    assert (await pointer(root_uri, "latest"))["path"] == "step-000003-1"
    assert (await find_latest(root_uri, cfg)).endswith("step-000003-1")


# ---------------------------------------------------------------- failures never advance a pointer


async def test_failure_between_files_keeps_pointer_on_previous_and_retries(root_uri: str) -> None:
    cfg = make_cfg()
    store = FaultyStore(open_store(root_uri, cfg.storage))
    writer = CheckpointWriter(root_uri, cfg, store=store, retry_base_s=0.05, retry_max_s=0.2)
    with capture_logs() as logs:
        async with running(writer):
            writer.submit(request("latest", 1))
            await until(lambda: writer.stats.written == 1)
            store.fail_from = store.uploads + 2  # the 2nd file of the next checkpoint fails
            writer.submit(request("latest", 2))
            await until(lambda: writer.stats.failed >= 2)  # failed, retried, failed again

            assert (await pointer(root_uri, "latest"))["path"] == "step-000001"
            assert "step-000002" in await folder_names(root_uri)  # files of the partial write...
            assert [i.step for i in await list_checkpoints(root_uri, cfg)] == [1]  # ...never listed
            assert (await find_latest(root_uri, cfg)).endswith("step-000001")

            store.fail_from = None  # the store recovers: the retry goes through
            await until(lambda: writer.stats.written == 2)
    await store.inner.aclose()
    assert (await pointer(root_uri, "latest"))["path"] == "step-000002"
    failed = [e for e in logs if e["event"] == "checkpoint_failed"]
    assert failed and failed[0]["step"] == 2 and "injected failure" in failed[0]["reason"]
    saved = [(e["kind"], e["step"]) for e in logs if e["event"] == "checkpoint_saved"]
    assert saved == [("latest", 1), ("latest", 2)]
    assert "testing-secret-key" not in repr(logs)


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the writer serialises checkpoints (the temp folder), to see what it leaves behind."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


async def test_close_timeout_during_upload_leaves_no_partial_checkpoint_visible(root_uri: str, scratch: Path) -> None:
    cfg = make_cfg()
    await write(root_uri, cfg, request("latest", 1))
    store = FaultyStore(open_store(root_uri, cfg.storage))
    store.gate = asyncio.Event()  # uploads hang, as when the process dies mid-upload
    writer = CheckpointWriter(root_uri, cfg, store=store)
    task = asyncio.create_task(writer.run())
    writer.submit(request("latest", 2))
    await until(lambda: store.waiting > 0)
    assert await writer.close(0.1) is False
    await task
    await store.inner.aclose()
    assert (await pointer(root_uri, "latest"))["path"] == "step-000001"
    assert [i.step for i in await list_checkpoints(root_uri, cfg)] == [1]
    assert list(scratch.iterdir()) == []  # no serialised files left behind


async def test_corrupt_file_fails_verification_and_resume_falls_back(root_uri: str, tmp_path: Path) -> None:
    cfg = make_cfg(keep_latest=3)
    await write(root_uri, cfg, request("latest", 1), request("latest", 2))
    async with open_store(root_uri) as store:
        data = bytearray(await store.read_bytes(f"step-000002/{ADAPTER}"))
        data[-1] ^= 0x01  # one flipped bit, same size
        await store.write_bytes(f"step-000002/{ADAPTER}", bytes(data))

    with pytest.raises(CheckpointError) as err:
        await load_checkpoint(f"{root_uri}/step-000002", cfg, tmp_path / "dl")
    message = str(err.value)
    assert "\n" not in message and ADAPTER in message and "sha256" in message and "step-000002" in message

    with capture_logs() as logs:
        found = await find_latest(root_uri, cfg)
    assert found is not None and found.endswith("step-000001")
    (invalid,) = [e for e in logs if e["event"] == "checkpoint_invalid"]
    assert "step-000002" in invalid["uri"] and "corrupt" in invalid["reason"]


async def test_folder_without_manifest_is_incomplete(root_uri: str, tmp_path: Path) -> None:
    cfg = make_cfg()
    await write(root_uri, cfg, request("latest", 1))
    async with open_store(root_uri) as store:
        await store.delete(f"step-000001/{MANIFEST}")
    assert await list_checkpoints(root_uri, cfg) == []
    assert await find_latest(root_uri, cfg) is None
    with pytest.raises(CheckpointError, match="incomplete"):
        await load_checkpoint(f"{root_uri}/step-000001", cfg, tmp_path / "dl")


async def test_a_missing_file_is_reported_and_not_listed(root_uri: str) -> None:
    cfg = make_cfg()
    await write(root_uri, cfg, request("latest", 1), request("latest", 2))
    async with open_store(root_uri) as store:
        await store.delete(f"step-000002/{LEARNER_TENSORS}")
    with capture_logs() as logs:
        assert [i.step for i in await list_checkpoints(root_uri, cfg)] == [1]
        assert (await find_latest(root_uri, cfg)).endswith("step-000001")
    assert any("learner_state.safetensors is missing" in e.get("reason", "") for e in logs)


# ---------------------------------------------------------------- the writer never blocks training


async def test_submit_returns_at_once_while_the_store_is_slow_and_supersedes(root_uri: str) -> None:
    cfg = make_cfg(keep_latest=2, max_pending=2)
    store = FaultyStore(open_store(root_uri, cfg.storage))
    store.gate = asyncio.Event()
    writer = CheckpointWriter(root_uri, cfg, store=store)
    async with running(writer):
        writer.submit(request("latest", 1))
        await until(lambda: store.waiting > 0)  # step 1 is uploading and stuck
        for step in range(2, 7):
            writer.submit(request("latest", step))  # plain calls: nothing here can wait on I/O
        writer.submit(request("best", 6, 3.0))
        assert writer.stats.pending == 2 and writer.stats.superseded == 3  # 2, 3, 4 gave way
        store.gate.set()
        await until(lambda: writer.stats.written == 3)
    await store.inner.aclose()
    assert [(i.step, i.is_best, i.is_latest) for i in await list_checkpoints(root_uri, cfg)] == [
        (5, False, False), (6, True, True),
    ]


# ---------------------------------------------------------------- the queue policy (pure)


def job(kind: str, step: int, *, learner: bool | None = None) -> Job:
    req = request(kind, step)
    if learner is not None:
        req.learner_state = {"x": 1} if learner else None
    return Job.of(req)


def steps(q: PendingQueue) -> list[tuple[int, str]]:
    return [(j.step, ",".join(sorted(j.kinds))) for j in q.jobs]


def test_queue_newer_best_supersedes_pending_best() -> None:
    q = PendingQueue(3)
    old = job("best", 1)
    assert q.push(old) == [] and q.push(job("latest", 2)) == []
    assert q.push(job("best", 3)) == [old]
    assert steps(q) == [(2, "latest"), (3, "best")]


def test_queue_when_full_the_oldest_latest_gives_way() -> None:
    q = PendingQueue(2)
    first = job("latest", 1)
    q.push(first)
    q.push(job("best", 2))
    assert q.push(job("latest", 3)) == [first]
    assert steps(q) == [(2, "best"), (3, "latest")]
    q2 = PendingQueue(2)
    q2.push(job("latest", 1))
    q2.push(job("latest", 2))
    assert [j.step for j in q2.push(job("best", 3))] == [1]  # a best makes room too


def test_queue_never_drops_a_best_for_a_latest() -> None:
    q = PendingQueue(1)
    q.push(job("best", 1))
    newer = job("latest", 2)
    assert q.push(newer) == [newer]
    assert steps(q) == [(1, "best")]


def test_queue_same_step_merges_into_one_resumable_job() -> None:
    q = PendingQueue(2)
    q.push(job("best", 4))
    latest = job("latest", 4)
    assert q.push(latest) == []
    (merged,) = q.jobs
    assert merged.kinds == {"best", "latest"} and merged.request is latest.request
    # a newer best takes the best role away; the folder stays as a latest
    q.push(job("best", 5))
    assert steps(q) == [(4, "latest"), (5, "best")]


def test_queue_retry_goes_first_after_its_backoff() -> None:
    q = PendingQueue(3)
    failed = job("latest", 1)
    q.push(job("latest", 2))
    failed.not_before = 10.0
    assert q.requeue(failed) == []
    assert [j.step for j in q.jobs] == [1, 2]
    assert q.next_ready(now=5.0) == (None, 5.0)  # FIFO: the others wait behind it
    assert q.next_ready(now=10.0)[0] is failed


def test_queue_a_retried_best_is_superseded_by_a_newer_pending_best() -> None:
    q = PendingQueue(3)
    q.push(job("best", 5))
    failed = job("best", 3)
    assert q.requeue(failed) == [failed]
    assert steps(q) == [(5, "best")]


# ---------------------------------------------------------------- untrusted pointers, manifests (pure)


def test_pointer_must_name_a_step_folder() -> None:
    for bad in ("../../etc", "step-1", "step-000001/../x", "/abs"):
        with pytest.raises(CheckpointError, match="step folder"):
            parse_pointer(orjson.dumps({"step": 1, "path": bad}), "best.json")
    with pytest.raises(CheckpointError, match="does not match"):
        parse_pointer(orjson.dumps({"step": 2, "path": "step-000001"}), "best.json")
    assert parse_pointer(orjson.dumps({"step": 1, "path": "step-000001-2"}), "x").step == 1


def test_manifest_rejects_unexpected_names_and_bad_entries() -> None:
    entry = {"sha256": "a" * 64, "size": 3}
    files = {"adapter_model.safetensors": entry, "adapter_config.json": entry, "trainer_state.json": entry}
    assert parse_manifest(orjson.dumps({"step": 1, "files": files}), "m")["step"] == 1
    with pytest.raises(CheckpointError, match="unexpected file '../evil.pt'"):
        parse_manifest(orjson.dumps({"step": 1, "files": files | {"../evil.pt": entry}}), "m")
    with pytest.raises(CheckpointError, match="64 hex"):
        parse_manifest(orjson.dumps({"step": 1, "files": files | {"trainer_state.json": {"sha256": "x", "size": 1}}}), "m")
    with pytest.raises(CheckpointError, match="lists no adapter_config.json"):
        parse_manifest(orjson.dumps({"step": 1, "files": {"adapter_model.safetensors": entry, "trainer_state.json": entry}}), "m")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        parse_manifest(b"{", "m")


def test_retention_policy() -> None:
    def folder(name: str, resumable: bool = True, complete: bool = True) -> Folder:
        files = {"adapter_model.safetensors": 1} | ({"manifest.json": 1} if complete else {})
        return Folder(name, files | (dict.fromkeys(LEARNER_FILES, 1) if resumable else {}))

    folders = {f.name: f for f in [folder("step-000001"), folder("step-000002", resumable=False),
                                   folder("step-000003"), folder("step-000004", complete=False),
                                   folder("step-000005"), folder("step-000007", complete=False)]}
    assert folders_to_delete(folders, "step-000002", "step-000005", keep_latest=2) == [
        "step-000001", "step-000004",
    ]  # best kept, latests 5 and 3 kept, the partial 4 cleared, 7 (beyond the pointers) untouched
    assert folders_to_delete(folders, None, None, keep_latest=1) == []


def test_split_checkpoint_uri() -> None:
    assert split_checkpoint_uri("s3://b/run/step-000010/") == ("s3://b/run", "step-000010")
    assert split_checkpoint_uri("s3://bkt/step-000010") == ("s3://bkt", "step-000010")
    assert split_checkpoint_uri("/tmp/x/step-000010-1") == ("/tmp/x", "step-000010-1")
    assert split_checkpoint_uri("step-000010") == (".", "step-000010")
    assert split_checkpoint_uri("s3://b/run") == ("s3://b/run", None)


# ---------------------------------------------------------------- preflight and the command


async def test_preflight_passes_on_a_writable_location_and_leaves_nothing(root_uri: str) -> None:
    await preflight(root_uri, make_cfg())
    async with open_store(root_uri) as store:
        assert await store.list() == []  # its probe was written, read back and deleted


async def test_preflight_names_a_missing_bucket(s3_env: S3Env) -> None:
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        await preflight("s3://no-such-bucket/ckpts", make_cfg())


def test_list_command_prints_json_when_piped(root_uri: str, capsys: pytest.CaptureFixture) -> None:
    asyncio.run(write(root_uri, make_cfg(), request("best", 1, 2.5), request("latest", 2)))
    capsys.readouterr()
    assert cli.main(["checkpoints", "list", root_uri]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    rows = orjson.loads(out)
    assert [(r["step"], r["is_best"], r["is_latest"], r["validation_score"]) for r in rows] == [
        (1, True, False, 2.5), (2, False, True, None),
    ]


def test_list_command_on_an_empty_location(root_uri: str, capsys: pytest.CaptureFixture) -> None:
    if "://" not in root_uri or root_uri.startswith("file://"):
        Path(root_uri.removeprefix("file://")).mkdir(parents=True)  # empty, but there
    assert cli.main(["checkpoints", "list", root_uri, "--json"]) == 0
    captured = capsys.readouterr()
    assert orjson.loads(captured.out.strip().splitlines()[-1]) == []
    assert "no checkpoints under" in captured.err


def test_list_command_on_a_missing_local_folder_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["checkpoints", "list", str(tmp_path / "typo")]) == 1
    assert capsys.readouterr().err.strip() == f"jobrl-async: checkpoint: {tmp_path / 'typo'} does not exist"


def test_list_json_stays_a_document_when_a_pointer_is_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "best.json").write_text("garbage")
    assert cli.main(["checkpoints", "list", str(tmp_path / "ck"), "--json"]) == 0
    captured = capsys.readouterr()
    assert orjson.loads(captured.out) == []  # the whole of stdout is the JSON list
    assert "checkpoint_invalid" in captured.err  # the warning went to stderr


def test_list_command_on_a_missing_bucket_exits_1(s3_env: S3Env, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["checkpoints", "list", "s3://no-such-bucket/ckpts"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no-such-bucket" in err and "does not exist" in err


def test_table_marks_best_and_latest() -> None:
    from jobrl_async.checkpoints import CheckpointInfo

    rows = [CheckpointInfo(3, "step-000003", "u", "latest", None, 2048, "2025-01-01T00:00:00+00:00", False, True),
            CheckpointInfo(2, "step-000002", "u", "best", 7.25, 5 * 1024**2, "2025-01-01T00:00:00+00:00", True, False)]
    table = render_table(rows).splitlines()
    assert table[0].split()[:4] == ["step", "score", "size", "time"]
    assert table[1].rstrip().endswith("latest") and "2.0 KB" in table[1] and " - " in table[1]
    assert table[2].rstrip().endswith("best") and "7.250" in table[2] and "5.0 MB" in table[2]
    assert human_size(12) == "12 B"


async def test_submit_takes_the_tensors_it_is_given_without_a_second_copy(root_uri: str, tmp_path: Path) -> None:
    """The caller hands over private copies (the pipeline makes them on the device thread):
    what is written are those very tensors, as they are when the writer gets to them."""
    cfg = make_cfg()
    req = request("latest", 1)
    exp_avg = req.learner_state["optimizer"]["state"][0]["exp_avg"]
    weight = next(iter(req.adapter.values()))
    writer = CheckpointWriter(root_uri, cfg)
    writer.submit(req)
    exp_avg.add_(1.0)  # not a thing callers do: it shows whether submit copied
    weight.mul_(2.0)
    async with running(writer):
        await until(lambda: writer.stats.written == 1)
    loaded = await load_checkpoint(f"{root_uri}/step-000001", cfg, tmp_path / "dl")
    assert torch.equal(loaded.learner_state["optimizer"]["state"][0]["exp_avg"], exp_avg)
    assert torch.equal(next(iter(loaded.adapter.values())), weight)


# ---------------------------------------------------------------- what the writer retries, and for how long


async def test_a_bug_crashes_the_writer_instead_of_being_retried(root_uri: str, scratch: Path) -> None:
    cfg = make_cfg()
    store = FaultyStore(open_store(root_uri, cfg.storage))
    store.fail_from = 1
    store.error = lambda uri: TypeError("a bug of ours")
    writer = CheckpointWriter(root_uri, cfg, store=store, retry_base_s=0.01, retry_max_s=0.01)
    task = asyncio.create_task(writer.run())
    writer.submit(request("latest", 1))
    with anyio.fail_after(30):  # a hang guard: retried forever, the task would never end
        await asyncio.wait({task})
    await store.inner.aclose()
    assert isinstance(task.exception(), TypeError)
    assert writer.stats.failed == 0  # not counted as a storage failure, not retried
    assert list(scratch.iterdir()) == []  # its serialised files are cleaned up all the same


@pytest.mark.parametrize(("error", "reason"), [
    (asyncio.TimeoutError(), "storage: TimeoutError (network)"),  # an OSError in Python 3.11, not the disk's
    (ConnectionResetError(104, "Connection reset by peer"), "storage: ConnectionResetError (network)"),
    (PermissionError(13, "Permission denied"), "local disk: PermissionError: Permission denied"),
])
async def test_a_failed_write_names_the_network_or_the_disk_rightly(root_uri: str, error: BaseException,
                                                                    reason: str) -> None:
    cfg = make_cfg(max_attempts=1)
    store = FaultyStore(open_store(root_uri, cfg.storage))
    store.fail_from, store.error = 1, lambda uri: error
    writer = CheckpointWriter(root_uri, cfg, store=store, retry_base_s=0.01, retry_max_s=0.02)
    with capture_logs() as logs:
        async with running(writer):
            writer.submit(request("latest", 1))
            await until(lambda: writer.stats.abandoned == 1)
    await store.inner.aclose()
    assert [e["reason"] for e in logs if e["event"] == "checkpoint_failed"] == [reason]


async def test_a_checkpoint_that_keeps_failing_is_given_up_and_the_next_one_is_written(root_uri: str) -> None:
    cfg = make_cfg(max_attempts=3)
    store = FaultyStore(open_store(root_uri, cfg.storage))
    store.fail_under = "step-000002/"  # the store refuses this one folder, whatever happens
    results: list[tuple[str, bool, str | None]] = []
    writer = CheckpointWriter(root_uri, cfg, store=store, retry_base_s=0.01, retry_max_s=0.02,
                              on_result=lambda kind, ok, persistent=None: results.append((kind, ok, persistent)))
    with capture_logs() as logs:
        async with running(writer):
            writer.submit(request("best", 2, 9.0))
            writer.submit(request("latest", 3))  # queued behind the stuck best
            await until(lambda: writer.stats.written == 1)
    await store.inner.aclose()
    assert (await pointer(root_uri, "latest"))["path"] == "step-000003"
    assert await pointer(root_uri, "best") is None
    assert writer.stats.abandoned == 1 and writer.stats.failed == 3
    (abandoned,) = [e for e in logs if e["event"] == "checkpoint_abandoned"]
    assert abandoned["step"] == 2 and abandoned["attempts"] == 3 and "injected failure" in abandoned["reason"]
    assert [e["attempt"] for e in logs if e["event"] == "checkpoint_failed"] == [1, 2, 3]
    assert [e for e in logs if e["event"] == "checkpoint_writes_failing"]
    # what /healthz hears: failures, the third one persistent, then a success clears it
    assert [(k, ok, p is not None) for k, ok, p in results] == [
        ("best", False, False), ("best", False, False), ("best", False, True), ("latest", True, False),
    ]


async def test_writes_that_keep_failing_are_persistent_even_when_each_checkpoint_is_superseded(root_uri: str) -> None:
    cfg = make_cfg(max_pending=1, max_attempts=3)
    store = FaultyStore(open_store(root_uri, cfg.storage))
    store.fail_from = 1
    persistent: list[str] = []
    writer = CheckpointWriter(root_uri, cfg, store=store, retry_base_s=5.0, retry_max_s=5.0,
                              on_result=lambda kind, ok, why=None: why and persistent.append(why))
    async with running(writer, timeout=0.1):
        for step in range(1, 4):  # each new latest supersedes the failed one waiting for its retry
            writer.submit(request("latest", step))
            await until(lambda step=step: writer.stats.failed == step)
    await store.inner.aclose()
    assert writer.stats.abandoned == 0 and writer.stats.superseded == 2
    assert persistent == ["3 failed in a row (see checkpoint_failed in the log)"]


# ---------------------------------------------------------------- retention leaves what is not ours


async def test_retention_deletes_only_files_it_writes(root_uri: str, s3_or_none: Any) -> None:
    cfg = make_cfg(keep_latest=1)
    await write(root_uri, cfg, request("latest", 1))
    foreign = ["step-000001/notes.txt", "step-000001/sub/x", "step-٠٠٠٠٠٢/manifest.json",
               "other/step-000001/manifest.json"]
    foreign.append("step-000001//x" if s3_or_none else "step-000003\n/manifest.json")  # what each can hold
    async with open_store(root_uri) as store:
        for key in foreign:
            if s3_or_none is not None:  # S3Store itself refuses to write keys like these
                s3_or_none.client().put_object(Bucket=s3_or_none.bucket, Key=f"runs/root/{key}", Body=b"not ours")
            else:
                await store.write_bytes(key, b"not ours")
    with capture_logs() as logs:
        await write(root_uri, cfg, request("latest", 2), request("latest", 3))
    async with open_store(root_uri) as store:
        left = {o.key for o in await store.list()}
    assert set(foreign) <= left  # every foreign key is still there
    assert not any(k.startswith("step-000001/") and k.rpartition("/")[2] in ("adapter_model.safetensors", MANIFEST)
                   for k in left)  # ... and ours in that folder are gone
    assert not [e for e in logs if e["event"] == "checkpoint_retention_failed"]


@pytest.fixture
def s3_or_none(request: pytest.FixtureRequest, root_uri: str) -> Any:
    return request.getfixturevalue("s3_env") if root_uri.startswith("s3://") else None


def test_only_ascii_step_folders_without_a_trailing_newline_are_ours() -> None:
    listing = [ObjectInfo(k, 1, datetime.now(timezone.utc)) for k in
               ["step-000001/manifest.json", "step-000002\n/manifest.json", "step-٠٠٠٠٠٣/manifest.json",
                "step-000004-1/manifest.json"]]
    assert list(folders_from_listing(listing)) == ["step-000001", "step-000004-1"]
    for bad in ("step-000001\n", "step-٠٠٠٠٠١"):
        with pytest.raises(CheckpointError, match="step folder"):
            parse_pointer(orjson.dumps({"step": 1, "path": bad}), "latest.json")
    assert split_checkpoint_uri("s3://b/run/step-000010\n") == ("s3://b/run/step-000010\n", None)
    entry = {"sha256": "a" * 64 + "\n", "size": 3}
    files = {n: {"sha256": "a" * 64, "size": 3} for n in ("adapter_model.safetensors", "adapter_config.json")}
    with pytest.raises(CheckpointError, match="64 hex"):
        parse_manifest(orjson.dumps({"step": 1, "files": files | {"trainer_state.json": entry}}), "m")


# ---------------------------------------------------------------- untrusted files read back


async def test_an_oversized_latest_pointer_falls_back_like_a_corrupt_one(root_uri: str) -> None:
    cfg = make_cfg(keep_latest=3)
    await write(root_uri, cfg, request("latest", 1), request("latest", 2))
    async with open_store(root_uri) as store:
        await store.write_bytes("latest.json", orjson.dumps({"step": 2, "path": "step-000002"}) + b" " * 100_000)
    with capture_logs() as logs:
        found = await find_latest(root_uri, cfg)
    assert found is not None and found.endswith("step-000002")  # the newest folder that verifies
    (invalid,) = [e for e in logs if e["event"] == "checkpoint_invalid"]
    assert invalid["uri"].endswith("latest.json") and "limit" in invalid["reason"]


async def test_the_learner_state_is_stored_without_pickle_and_loaded_without_torch_load(
    root_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg()
    req = request("latest", 4)
    await write(root_uri, cfg, req)
    async with open_store(root_uri) as store:
        names = sorted(o.key.rpartition("/")[2] for o in await store.list("step-000004/"))
    assert names == sorted([ADAPTER, ADAPTER_CONFIG, LEARNER_JSON, LEARNER_TENSORS, MANIFEST, "trainer_state.json"])

    def no_unpickling(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.load called on a checkpoint file")

    monkeypatch.setattr(torch, "load", no_unpickling)
    loaded = await load_checkpoint(f"{root_uri}/step-000004", cfg, tmp_path / "dl")
    state = loaded.learner_state["optimizer"]["state"][0]
    assert torch.equal(state["exp_avg"], req.learner_state["optimizer"]["state"][0]["exp_avg"])
    assert loaded.learner_state["scheduler"] == {"last_epoch": 4} and loaded.learner_state["version"] == 4


async def rewrite_manifest(root_uri: str, folder: str, change: Callable[[dict], None],
                           files: dict[str, bytes] | None = None) -> None:
    """Tamper with a checkpoint the way an attacker with write access to the bucket could."""
    async with open_store(root_uri) as store:
        manifest = orjson.loads(await store.read_bytes(f"{folder}/{MANIFEST}"))
        for name, data in (files or {}).items():
            await store.write_bytes(f"{folder}/{name}", data)
        change(manifest)
        await store.write_bytes(f"{folder}/{MANIFEST}", manifest_bytes(manifest))


async def test_a_crafted_learner_state_is_refused_in_one_line(root_uri: str, tmp_path: Path) -> None:
    import hashlib

    cfg = make_cfg()
    await write(root_uri, cfg, request("latest", 1))
    doc = orjson.dumps({"format": 1, "state": {"$pickle": "gASVAAAAAAAAAAB9lC4="}})

    def point_at_doc(m: dict) -> None:
        m["files"][LEARNER_JSON] = {"sha256": hashlib.sha256(doc).hexdigest(), "size": len(doc)}

    await rewrite_manifest(root_uri, "step-000001", point_at_doc, {LEARNER_JSON: doc})
    with pytest.raises(CheckpointError) as err:
        await load_checkpoint(f"{root_uri}/step-000001", cfg, tmp_path / "dl")
    assert "\n" not in str(err.value) and "learner_state.json" in str(err.value) and "unknown tag" in str(err.value)


async def test_a_file_larger_than_max_file_mb_is_refused_before_download(root_uri: str, tmp_path: Path) -> None:
    cfg = make_cfg()
    await write(root_uri, cfg, request("latest", 1))
    cfg.checkpoints.max_file_mb = 1

    def claim_2_mib(m: dict) -> None:
        m["files"][ADAPTER]["size"] = 2 * 1024 * 1024

    await rewrite_manifest(root_uri, "step-000001", claim_2_mib)
    with pytest.raises(CheckpointError, match=r"size of adapter_model.safetensors.*checkpoints\.max_file_mb"):
        await load_checkpoint(f"{root_uri}/step-000001", cfg, tmp_path / "dl")
    assert not (tmp_path / "dl" / ADAPTER).exists()


async def old_format_checkpoint(root_uri: str) -> None:
    """A `latest` as the first format wrote it: the learner state as a pickle, learner_state.pt."""
    await write(root_uri, make_cfg(), request("latest", 1))
    pickled = b"\x80\x04\x95pickle"

    def first_format(m: dict) -> None:
        for name in LEARNER_FILES:
            del m["files"][name]
        m["files"]["learner_state.pt"] = {"sha256": "0" * 64, "size": len(pickled)}

    await rewrite_manifest(root_uri, "step-000001", first_format, {"learner_state.pt": pickled})


async def test_a_checkpoint_of_the_first_format_is_one_clear_error(root_uri: str, tmp_path: Path) -> None:
    await old_format_checkpoint(root_uri)
    cfg = make_cfg()
    with pytest.raises(ObsoleteCheckpoint) as err:
        await load_checkpoint(f"{root_uri}/step-000001", cfg, tmp_path / "dl")
    line = str(err.value)
    assert "\n" not in line and "first checkpoint format" in line and "--no-resume" in line
    assert not (tmp_path / "dl").exists()  # refused before anything was downloaded
    with pytest.raises(ObsoleteCheckpoint):
        await find_latest(root_uri, cfg)  # a resume says so too, rather than silently starting over


def test_eval_of_a_checkpoint_of_the_first_format_exits_1_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = str(tmp_path / "ckpt")
    asyncio.run(old_format_checkpoint(root))
    assert cli.main(["eval", "--checkpoint", f"{root}/step-000001", "--judge", "stub"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "first checkpoint format" in err and "Traceback" not in err


# ---------------------------------------------------------------- eval and generate choose the base model


@pytest.mark.parametrize("command", ["eval", "generate"])
def test_a_checkpoint_never_chooses_the_base_model(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobrl_async.policy import model

    root = str(tmp_path / "ckpt")
    req = request("best", 1, 5.0)
    req.adapter_config["base_model_name_or_path"] = "attacker/backdoored-model"
    asyncio.run(write(root, make_cfg(), req))
    asked: list[str] = []

    def load_policy(cfg: Config, *args: Any, **kwargs: Any) -> None:  # stands in for the download
        asked.append(cfg.model.name)
        raise ModelError(f"model '{cfg.model.name}' not loaded in this test")

    monkeypatch.setattr(model, "load_policy", load_policy)
    context = tmp_path / "context.json"
    context.write_text('{"job_title": "Data Engineer", "language": "en", "skills": ["Python", "SQL", "Spark"]}')
    args = {"eval": ["eval", "--checkpoint", root, "--judge", "stub"],
            "generate": ["generate", "--context", str(context), "--checkpoint", root]}[command]
    assert cli.main(args) == 1
    assert cli.main([*args, "--model", "tiny"]) == 1
    assert asked == [Config().model.name, "tiny"]  # the configured default, then the user's choice
    assert "attacker" not in capsys.readouterr().err


# ---------------------------------------------------------------- printed to a terminal


def test_the_table_escapes_control_characters() -> None:
    rows = [CheckpointInfo(3, "step-000003", "u", "best\x1b[2J", None, 10, "2025\x1b]0;pwned\x07\u202e", False, True)]
    table = render_table(rows)
    assert "\x1b" not in table and "\x07" not in table and "\u202e" not in table
    assert "best\\x1b[2J" in table and "\\x1b]0;pwned\\x07\\u202e" in table
    assert escape_controls("Zürich 10:00+02:00") == "Zürich 10:00+02:00"  # printable text is left alone


async def test_listed_fields_come_from_checked_values_only(root_uri: str) -> None:
    cfg = make_cfg()
    await write(root_uri, cfg, request("latest", 1))

    def hostile(m: dict) -> None:
        m["time"], m["kind"] = "\x1b]0;pwned\x07", "\x1b[31mbest"

    await rewrite_manifest(root_uri, "step-000001", hostile)
    (info,) = await list_checkpoints(root_uri, cfg)
    assert info.time == "" and info.kind == "latest"


def test_torch_is_required_at_a_version_without_cve_2025_32434() -> None:
    """Before 2.6, torch.load(weights_only=True) could still run code from a crafted file."""
    import tomllib

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    (torch_req,) = [Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "torch"]
    assert not torch_req.specifier.contains("2.5.1") and torch_req.specifier.contains("2.6.0")


async def test_the_writer_makes_and_removes_its_temp_folders_off_the_event_loop(
    root_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import threading

    loop_thread = threading.current_thread()
    calls: list[tuple[str, bool]] = []

    def watched(name: str, real: Callable) -> Callable:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, threading.current_thread() is loop_thread))
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(shutil, "rmtree", watched("rmtree", shutil.rmtree))
    monkeypatch.setattr(tempfile, "mkdtemp", watched("mkdtemp", tempfile.mkdtemp))
    cfg = make_cfg()
    await write(root_uri, cfg, request("best", 1, 1.0), request("latest", 2))
    assert {name for name, _ in calls} == {"rmtree", "mkdtemp"}
    assert not [name for name, on_loop in calls if on_loop]  # each one ran in a worker thread
