"""The learner state as JSON + a safetensors table: exact round trips, and strict reading back."""

from __future__ import annotations

import math

import orjson
import pytest
import torch

from jobrl_async.errors import CheckpointError
from jobrl_async.checkpoints.tensor_json import MAX_DEPTH, join_tensors, split_tensors


def is_tensor(value: object) -> bool:
    return isinstance(value, torch.Tensor)


def round_trip(tree: object) -> object:
    doc, tensors = split_tensors(tree, is_tensor)
    return join_tensors(orjson.loads(orjson.dumps(doc)), tensors, "learner_state.json")


def test_optimizer_and_scheduler_state_round_trip_exactly() -> None:
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(2))]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 / (1 + s))
    (params[0].sum() + params[1].pow(2).sum()).backward()
    optimizer.step()
    scheduler.step()
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "version": 3}

    back = round_trip(state)

    assert back["scheduler"] == state["scheduler"] and back["version"] == 3
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]  # betas stay a tuple
    assert isinstance(back["optimizer"]["param_groups"][0]["betas"], tuple)
    assert back["optimizer"]["state"].keys() == {0, 1}  # int keys: what load_state_dict maps by
    fresh = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone()) for p in params], lr=1e-3)
    fresh.load_state_dict(back["optimizer"])
    for i in (0, 1):
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(fresh.state_dict()["state"][i][name], state["optimizer"]["state"][i][name])


def test_values_json_cannot_say_survive() -> None:
    back = round_trip({"inf": math.inf, "ninf": -math.inf, "pair": (1, "a"), 7: [None, True, 0.5]})
    assert back["inf"] == math.inf and back["ninf"] == -math.inf
    assert back["pair"] == (1, "a") and back[7] == [None, True, 0.5]
    assert math.isnan(round_trip({"x": math.nan})["x"])  # orjson would have written null


def test_a_document_that_looks_like_a_tag_is_still_data() -> None:
    assert round_trip({"$tensor": "t0", "$dict": []}) == {"$tensor": "t0", "$dict": []}


def test_what_cannot_be_stored_is_refused_when_saving() -> None:
    with pytest.raises(ValueError, match="set"):
        split_tensors({"x": {1, 2}}, is_tensor)
    with pytest.raises(ValueError, match="key of type float"):
        split_tensors({1.5: 0}, is_tensor)


@pytest.mark.parametrize(
    ("doc", "tensors", "reason"),
    [
        ({"$tensor": "t9"}, {}, "does not hold"),
        ([{"$tensor": "t0"}, {"$tensor": "t0"}], {"t0": torch.zeros(1)}, "twice"),
        ({"$dict": []}, {"t0": torch.zeros(1)}, "does not use"),
        ({"$pickle": "gASV"}, {}, "unknown tag"),
        ({"a": 1}, {}, "unknown tag"),
        ({"$dict": [[1, 2], 3], "$tuple": []}, {}, "exactly one tag"),
        ({"$dict": [[1.5, 0]]}, {}, "neither a string nor an integer"),
        ({"$dict": [[1]]}, {}, "pair"),
        ({"$float": "1e999"}, {}, "unknown tag"),
    ],
)
def test_a_malformed_document_is_one_checkpoint_error_naming_the_file(doc: object, tensors: dict, reason: str) -> None:
    with pytest.raises(CheckpointError, match=reason) as err:
        join_tensors(doc, tensors, "s3://b/step-000001: learner_state.json")
    assert "step-000001: learner_state.json" in str(err.value) and "\n" not in str(err.value)


def test_nesting_is_bounded_both_ways() -> None:
    deep: object = 0
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(ValueError, match="deeper"):
        split_tensors(deep, is_tensor)
    with pytest.raises(CheckpointError, match="deeper"):
        join_tensors(deep, {}, "learner_state.json")
