"""The policy: a causal LM with a LoRA adapter, its tokenizer, and where it runs.

`cfg.model.name` is one of:
- "tiny": the embedded model, shipped in the package (`tiny_assets.shipped_tiny_dir`: its files
  checked against their manifest), then loaded exactly like a local folder;
- a local folder holding a transformers model and tokenizer;
- a hub id (`google/gemma-3-270m-it`): the local Hugging Face cache first, then the hub; when
  neither has it, one `ModelError` says what was looked for and where;
- "gemma-3-270m-random": gemma-3-270m's architecture with random weights and the tiny
  tokenizer, for GPU benchmarks where the real weights cannot be downloaded.

The policy version counts optimizer steps; the learner bumps it, trajectories record it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..config import TINY_MODEL, Config
from ..errors import ModelError
from ..ops.log import get_logger
from .device import resolve_device
from .tiny import END_OF_TURN, RANDOM_270M, gemma3_270m_config
from .tiny_assets import shipped_tiny_dir

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.jinja", "tokenizer*"]


@dataclass
class Policy:
    model: Any  # peft.PeftModel
    tokenizer: Any
    device: str
    dtype: Any  # torch.dtype
    base_name: str  # what `--model` said: written into adapter_config.json for portability
    version: int = 0  # optimizer steps applied; bumped by the learner

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Token ids that end a completion: EOS, <end_of_turn> and the model's own EOS list."""
        ids = {int(self.tokenizer.eos_token_id)}
        end_of_turn = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        if isinstance(end_of_turn, int) and end_of_turn != self.tokenizer.unk_token_id:
            ids.add(end_of_turn)
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update([eos] if isinstance(eos, int) else (eos or []))
        return tuple(sorted(ids))


def load_policy(cfg: Config, device: str | None = None, adapter_dir: str | Path | None = None) -> Policy:
    """The base model with a fresh LoRA adapter (per `cfg.lora`), or with the adapter in `adapter_dir`."""
    device = resolve_device(device or cfg.model.device)
    dtype = choose_dtype(cfg.model.dtype, device)
    if device.startswith("cuda"):
        _prefer_shape_free_attention()
    base, tokenizer, base_name = _load_base(cfg, device, dtype)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    with seeded(cfg.training.seed, device), warnings.catch_warnings():
        # LoRA A is random: seeded, the same run gets the same adapter. peft calls a
        # transformers API deprecated in v5: not ours to fix, and not worth a log line.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = _attach_lora(base, cfg, adapter_dir)
    model.peft_config["default"].base_model_name_or_path = base_name
    model.eval()
    log = get_logger("model")
    log.info(
        "model_loaded",
        model=base_name,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        parameters=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        adapter=str(adapter_dir) if adapter_dir else None,
    )
    return Policy(model=model, tokenizer=tokenizer, device=device, dtype=dtype, base_name=base_name)


def _prefer_shape_free_attention() -> None:
    """Turn off cuDNN's SDPA backend (torch then uses flash / memory-efficient attention).

    cuDNN builds an execution plan per attention shape; generation meets a new key length at
    every step and new prompt widths every batch. Measured on an H100 (torch 2.11, cu130):
    tiny model, batch 1, first pass over 256 new tokens 77 ms/step with cuDNN, 12 ms without.
    """
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)


def choose_dtype(name: str, device: str) -> Any:
    """bf16 on a CUDA GPU that supports it, fp32 elsewhere, unless `model.dtype` names one."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


# ---------------------------------------------------------------- base model


def resolve_model(name: str) -> str:
    """A local folder to load `name` from (the shipped folder for the tiny model)."""
    if name == TINY_MODEL:
        return str(shipped_tiny_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {path} has no config.json (is it a transformers model?)")
        return str(path)
    if _looks_like_path(name):
        raise ModelError(f"model folder {path} does not exist; pass --model PATH, a hub id or 'tiny'")
    return _from_hub(name)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") != 1 or Path(name).suffix != ""


def _from_hub(repo_id: str) -> str:
    """The snapshot folder of `repo_id`: from the local HF cache, else downloaded."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return snapshot_download(repo_id, allow_patterns=_HUB_FILES, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    try:
        return snapshot_download(repo_id, allow_patterns=_HUB_FILES)
    except GatedRepoError:
        raise ModelError(
            f"model '{repo_id}' is gated on the hub: accept its licence on huggingface.co and set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise ModelError(f"model '{repo_id}' does not exist on the hub (or is private)") from None
    except (LocalEntryNotFoundError, OSError) as e:
        raise ModelError(
            f"model '{repo_id}' not found locally (Hugging Face cache: {_hf_cache()}) and the hub is "
            f"unreachable ({type(e).__name__}); pass --model PATH or 'tiny'"
        ) from None


def _hf_cache() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return str(HF_HUB_CACHE)


def _load_base(cfg: Config, device: str, dtype: Any) -> tuple[Any, Any, str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr bars in a JSON-logging daemon are noise
    name = cfg.model.name
    if name == RANDOM_270M:
        return _random_270m(cfg, device, dtype)
    folder = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, attn_implementation=cfg.model.attn_implementation
        )
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"cannot load model '{name}' from {folder}: {e}") from None
    return model.to(device), tokenizer, name


def _random_270m(cfg: Config, device: str, dtype: Any) -> tuple[Any, Any, str]:
    """gemma-3-270m's shapes with random weights; the tiny tokenizer's ids are all in range."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(TINY_MODEL))
    config = gemma3_270m_config()
    config._attn_implementation = cfg.model.attn_implementation
    with seeded(0, device), torch.device(device):
        model = Gemma3ForCausalLM(config)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TURN)]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(dtype).eval(), tokenizer, RANDOM_270M


def _attach_lora(base: Any, cfg: Config, adapter_dir: str | Path | None) -> Any:
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter_dir is not None:
        folder = _adapter_folder(adapter_dir)
        try:
            return PeftModel.from_pretrained(base, str(folder), is_trainable=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelError(f"adapter in {folder} does not fit model '{cfg.model.name}': {_first_line(e)}") from None
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=0.0,  # the learner runs in eval mode: dropout would never apply (config.REMOVED_KEYS)
        target_modules=list(cfg.lora.target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(base, lora)
    except ValueError as e:
        raise ModelError(
            f"lora.target_modules {cfg.lora.target_modules} do not fit model '{cfg.model.name}': {_first_line(e)}"
        ) from None


@contextlib.contextmanager
def seeded(seed: int, device: str) -> Iterator[None]:
    """Seed torch inside the block, leaving the caller's random state as it was."""
    import torch

    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# ---------------------------------------------------------------- adapter weights


# save_embedding_layers=False everywhere: we never resize the vocabulary, and peft's "auto"
# asks the hub for the base model's config.json on every call (a network round trip, or a
# warning offline).


def adapter_state(policy: Policy) -> dict[str, Any]:
    """A CPU copy of the LoRA weights (a snapshot: later optimizer steps do not change it)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(policy.model, save_embedding_layers=False)
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def load_adapter_state(policy: Policy, state: dict[str, Any], source: str = "adapter state") -> None:
    """Put `state` (as `adapter_state` returns it) into the policy's adapter, after checking it fits."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    own = get_peft_model_state_dict(policy.model, save_embedding_layers=False)
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or extra or wrong:
        parts = [f"{label} {keys[:3]}{'...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)) if keys]
        raise ModelError(f"{source} does not fit the model's LoRA adapter: " + "; ".join(parts))
    set_peft_model_state_dict(policy.model, state)


def save_adapter(policy: Policy, folder: str | Path) -> Path:
    """PEFT's adapter files (safetensors + adapter_config.json) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    policy.model.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False)
    return folder


def load_adapter(policy: Policy, folder: str | Path) -> None:
    """Load the adapter saved in `folder` into the policy's adapter (same LoRA shape required)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = _adapter_folder(folder)
    _check_adapter_config(policy, folder)
    try:
        state = load_file(str(folder / ADAPTER_WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise ModelError(f"{folder / ADAPTER_WEIGHTS} is not a readable safetensors file: {e}") from None
    load_adapter_state(policy, state, source=f"adapter in {folder}")


def _adapter_folder(folder: str | Path) -> Path:
    folder = Path(folder).expanduser()
    for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
        if not (folder / name).is_file():
            raise ModelError(f"{folder} holds no PEFT adapter ({name} is missing)")
    return folder


def _check_adapter_config(policy: Policy, folder: Path) -> None:
    try:
        saved = orjson.loads((folder / ADAPTER_CONFIG).read_bytes())
    except (orjson.JSONDecodeError, OSError) as e:
        raise ModelError(f"{folder / ADAPTER_CONFIG} is not valid JSON: {e}") from None
    ours = policy.model.peft_config["default"]
    for key, value in (("r", ours.r), ("lora_alpha", ours.lora_alpha)):
        if saved.get(key) != value:
            raise ModelError(f"adapter in {folder} has {key}={saved.get(key)!r}, this model's LoRA has {value!r}")
