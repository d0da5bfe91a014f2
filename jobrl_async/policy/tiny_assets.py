"""The shipped tiny model: built by `build_tiny`, shipped under assets/tiny, verified on load.

The recipe lives in `tiny`; this module runs it and handles the files. `build_tiny` writes the
tokenizer, config and weights with `save_pretrained`, then `jobrl_tiny.json`: the version, the
spec, a digest of the training data, each file's sha256 and a content hash over them, and what
`drift` needs to check the shipped files against the code without the 2-4 minute build (the
initial weights' digest and the losses of the first warm-start steps).

`shipped_tiny_dir()` is what loading `tiny` reads: the package's own folder, every file checked
against the manifest (about 10 ms), nothing to build, cache or lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from ..errors import ModelError
from ..flow.records import Context
from .tiny import DEFAULT_SPEC, END_OF_TURN, TINY_VERSION, TinySpec, tiny_config, tokenizer_corpus, train_tokenizer
from .tiny import warm_start

SHIPPED_DIR = Path(__file__).parent.parent / "assets" / "tiny"
MANIFEST = "jobrl_tiny.json"
CHECK_STEPS = 8  # warm-start steps the drift check replays (~5 s)
LOSS_TOLERANCE = 1e-4  # relative: another CPU's kernels round differently; a code change moves far more


def training_contexts() -> list[Context]:
    """The bundled dataset's training split under the default data settings.

    Fixed on purpose: the embedded model must not depend on a user's dataset or seed.
    """
    from ..config import DataConfig
    from ..data import load_bundled, split_dataset

    defaults = DataConfig()
    return split_dataset(load_bundled(), defaults.validation_fraction, defaults.seed).train


def data_digest(contexts: Sequence[Context]) -> str:
    return hashlib.sha256(orjson.dumps([c.as_dict() for c in contexts])).hexdigest()


def state_digest(model: Any) -> str:
    """sha256 over a model's tensors (names, dtypes, shapes, bytes), in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _train(
    contexts: Sequence[Context], spec: TinySpec, stop_after: int | None = None, threads: int | None = None
) -> tuple[Any, Any, str, list[float]]:
    """(tokenizer, warm-started model, digest of the initial weights, losses): the recipe, seeded."""
    import torch
    from transformers import Gemma3ForCausalLM

    if not contexts:
        raise ValueError("the tiny model needs training contexts")
    tokenizer = train_tokenizer(tokenizer_corpus(contexts, spec.seed), spec.vocab_size)
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]), _threads(threads):
        torch.manual_seed(spec.seed)
        torch.use_deterministic_algorithms(True)
        try:
            model = Gemma3ForCausalLM(tiny_config(spec, len(tokenizer), end_of_turn)).to(torch.float32)
            initial = state_digest(model)
            losses = warm_start(model, tokenizer, contexts, spec, stop_after=stop_after)
        finally:
            torch.use_deterministic_algorithms(deterministic)
    return tokenizer, model, initial, losses


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Use `count` torch threads (None: the machine's cores, up to 8), then give back the setting.

    The process runs with one torch thread for the event loop's sake (device.configure_threads),
    but a build runs before any other heavy work. Measured: the same weights with 1 or 2 threads.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count or min(os.cpu_count() or 1, 8))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_tiny(out_dir: Path, contexts: Sequence[Context] | None = None, spec: TinySpec = DEFAULT_SPEC) -> dict[str, Any]:
    """Build the tokenizer and the warm-started model into `out_dir` (which must not exist).

    Returns the manifest, also written to `out_dir/jobrl_tiny.json` (last, so a folder holding
    it is complete). Nothing in it depends on the clock: two builds give the same bytes.
    """
    from transformers import GenerationConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    contexts = training_contexts() if contexts is None else contexts
    tokenizer, model, initial, losses = _train(contexts, spec)
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=[1, end_of_turn], pad_token_id=0)
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    files = file_digests(out_dir)
    manifest = {
        "version": TINY_VERSION,
        "spec": asdict(spec),
        "data_sha256": data_digest(contexts),
        "contexts": len(contexts),
        "vocab": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "loss_first": round(sum(losses[:10]) / max(1, len(losses[:10])), 4),
        "loss_last": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4),
        "check": {"initial_sha256": initial, "losses": losses[:CHECK_STEPS]},
        "files": files,
        "content_sha256": content_digest(files),
    }
    (out_dir / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return manifest


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file of a built folder but the manifest, by name."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }


def content_digest(files: dict[str, str]) -> str:
    return hashlib.sha256(orjson.dumps(files, option=orjson.OPT_SORT_KEYS)).hexdigest()


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        return orjson.loads((folder / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise ModelError(f"the tiny model's manifest {folder / MANIFEST} is missing or unreadable ({e}); "
                         "reinstall jobrl-async or rebuild it with `jobrl-async tiny build`") from None


def shipped_tiny_dir(folder: Path = SHIPPED_DIR) -> Path:
    """The shipped tiny model's folder, every file checked against its manifest."""
    manifest = read_manifest(folder)
    actual = file_digests(folder)
    for name, digest in manifest.get("files", {}).items():
        if actual.get(name) != digest:
            state = "missing" if name not in actual else "altered (its sha256 differs from the manifest's)"
            raise ModelError(f"the tiny model's file {folder / name} is {state}; reinstall jobrl-async or rebuild "
                             "it with `jobrl-async tiny build`")
    return folder


def drift(folder: Path = SHIPPED_DIR, steps: int = CHECK_STEPS) -> list[str]:
    """Where the shipped files differ from what the builder makes now (empty: they agree).

    Cheap (~10 s): the version, spec and data, the tokenizer's bytes, the initial weights, and
    the losses of the first `steps` warm-start steps, which any change to the recipe moves.
    The full rebuild (`jobrl-async tiny build --check`) compares the final bytes too.
    """
    manifest = read_manifest(folder)
    contexts = training_contexts()
    problems = [
        f"{key}: shipped {manifest.get(key)!r}, builder {now!r}"
        for key, now in (("version", TINY_VERSION), ("spec", asdict(DEFAULT_SPEC)),
                         ("data_sha256", data_digest(contexts)))
        if manifest.get(key) != now
    ]
    check = manifest.get("check", {})
    tokenizer, _model, initial, losses = _train(contexts, DEFAULT_SPEC, stop_after=steps, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for name, digest in file_digests(Path(tmp)).items():
            if manifest.get("files", {}).get(name) != digest:
                problems.append(f"tokenizer file {name}: shipped and rebuilt differ")
    if check.get("initial_sha256") != initial:
        problems.append("initial weights: shipped and rebuilt differ")
    shipped_losses = check.get("losses", [])[:steps]
    if len(shipped_losses) < steps or not all(
        math.isclose(a, b, rel_tol=LOSS_TOLERANCE) for a, b in zip(shipped_losses, losses)
    ):
        problems.append(f"warm-start losses of the first {steps} steps: shipped {shipped_losses}, rebuilt {losses}")
    return problems
