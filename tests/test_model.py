"""Loading the policy (tiny, local folder, hub id), LoRA, and adapter weights in and out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jobrl_async.config import Config
from jobrl_async.errors import ModelError
from jobrl_async.flow.records import Context
from jobrl_async.policy.logprobs import sequence_logprobs
from jobrl_async.policy.model import (
    adapter_state,
    choose_dtype,
    load_adapter,
    load_adapter_state,
    load_policy,
    resolve_model,
    save_adapter,
)
from jobrl_async.policy.prompts import prompt_ids

CONTEXTS = [
    Context("Data Scientist", "en", ("Python", "SQL", "Statistics"), "Tech"),
    Context("Comptable", "fr", ("Fiscalité", "Paie", "Excel", "Comptabilité générale"), "Finance"),
]
COMPLETION = "<job_offer>\n  <title>Data Scientist</title>\n  <overview>We are looking for a Data Scientist.</overview>"


def _logprobs(policy) -> list[torch.Tensor]:
    tok = policy.tokenizer
    prompts = [prompt_ids(tok, c) for c in CONTEXTS]
    completion = tok(COMPLETION, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return sequence_logprobs(policy.model, prompts, [completion, completion[:7]], 1.0, policy.pad_id)


def _close(a: list[torch.Tensor], b: list[torch.Tensor], tol: float = 0.0) -> bool:
    return all(torch.allclose(x, y, atol=tol, rtol=0) for x, y in zip(a, b))


def _perturb_lora(policy, scale: float = 0.5) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.add_(scale * torch.randn(p.shape, generator=generator))


# ---------------------------------------------------------------- loading


def test_tiny_and_its_local_folder_load_through_one_path(tiny_config: Config, tiny_model_dir: Path) -> None:
    assert resolve_model("tiny") == str(tiny_model_dir)
    by_name = load_policy(tiny_config)
    tiny_config.model.name = str(tiny_model_dir)
    by_path = load_policy(tiny_config)
    assert by_name.base_name == "tiny" and by_path.base_name == str(tiny_model_dir)
    assert _close(_logprobs(by_name), _logprobs(by_path))  # bit-identical


def test_policy_defaults(tiny_policy) -> None:
    assert tiny_policy.device == "cpu" and tiny_policy.dtype == torch.float32
    assert tiny_policy.version == 0
    assert tiny_policy.tokenizer.padding_side == "left"
    tok = tiny_policy.tokenizer
    assert set(tiny_policy.stop_ids) == {tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")}
    assert not tiny_policy.model.training


def test_lora_targets_gemma_attention_and_mlp_projections(tiny_policy) -> None:
    trainable = [n for n, p in tiny_policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for module in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert any(f".{module}.lora_A" in n for n in trainable), module
    assert tiny_policy.model.peft_config["default"].r == 16


def test_fresh_adapters_are_reproducible(tiny_config: Config) -> None:
    a, b = adapter_state(load_policy(tiny_config)), adapter_state(load_policy(tiny_config))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_target_modules_name_the_config_key(tiny_config: Config) -> None:
    tiny_config.lora.target_modules = ["no_such_proj"]
    with pytest.raises(ModelError, match=r"lora\.target_modules"):
        load_policy(tiny_config)


def test_missing_hub_model_is_one_clear_error() -> None:
    # Offline here: "not found locally and the hub is unreachable"; online: "does not exist".
    with pytest.raises(ModelError, match="jobrl-tests/no-such-model") as e:
        resolve_model("jobrl-tests/no-such-model")
    assert "\n" not in str(e.value)


def test_missing_or_invalid_local_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_dtype_choice() -> None:
    assert choose_dtype("auto", "cpu") == torch.float32
    assert choose_dtype("bfloat16", "cpu") == torch.bfloat16


# ---------------------------------------------------------------- adapter toggles


def test_lora_changes_logprobs_and_disable_adapter_gives_the_base(tiny_policy) -> None:
    base = _logprobs(tiny_policy)  # B = 0: the fresh adapter is the identity
    _perturb_lora(tiny_policy)
    tuned = _logprobs(tiny_policy)
    assert not _close(base, tuned, tol=1e-3)
    with tiny_policy.model.disable_adapter():
        assert _close(_logprobs(tiny_policy), base, tol=1e-6)
    assert _close(_logprobs(tiny_policy), tuned, tol=1e-6)  # re-enabled on exit


# ---------------------------------------------------------------- adapter weights


def test_adapter_state_is_a_snapshot_and_loads_back(tiny_policy) -> None:
    _perturb_lora(tiny_policy)
    state = adapter_state(tiny_policy)
    assert all(t.device.type == "cpu" for t in state.values())
    expected = _logprobs(tiny_policy)
    _perturb_lora(tiny_policy, scale=1.0)  # later training does not touch the snapshot
    assert not _close(_logprobs(tiny_policy), expected, tol=1e-3)
    load_adapter_state(tiny_policy, state)
    assert _close(_logprobs(tiny_policy), expected, tol=1e-6)


def test_a_state_that_does_not_fit_is_refused(tiny_policy) -> None:
    state = adapter_state(tiny_policy)
    name = next(iter(state))
    with pytest.raises(ModelError, match="missing"):
        load_adapter_state(tiny_policy, {k: v for k, v in state.items() if k != name})
    with pytest.raises(ModelError, match="wrong shape"):
        load_adapter_state(tiny_policy, {**state, name: torch.zeros(3, 3)})


def test_save_and_load_adapter(tiny_policy, tiny_config: Config, tmp_path: Path) -> None:
    _perturb_lora(tiny_policy)
    expected = _logprobs(tiny_policy)
    folder = save_adapter(tiny_policy, tmp_path / "adapter")
    assert (folder / "adapter_model.safetensors").is_file()
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny"  # portable: not this machine's cache path

    fresh = load_policy(tiny_config)
    load_adapter(fresh, folder)
    assert _close(_logprobs(fresh), expected, tol=1e-6)

    from_folder = load_policy(tiny_config, adapter_dir=folder)  # PeftModel.from_pretrained
    assert _close(_logprobs(from_folder), expected, tol=1e-6)
    assert any(p.requires_grad for p in from_folder.model.parameters())  # still trainable


def test_load_adapter_errors_name_the_folder(tiny_policy, tiny_config: Config, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no PEFT adapter"):
        load_adapter(tiny_policy, tmp_path)
    tiny_config.lora.r = 4
    folder = save_adapter(load_policy(tiny_config), tmp_path / "r4")
    with pytest.raises(ModelError, match=r"r=4"):
        load_adapter(tiny_policy, folder)
