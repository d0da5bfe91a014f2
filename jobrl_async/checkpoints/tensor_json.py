"""A nest of dicts, lists, numbers and tensors as JSON + a flat tensor table (safetensors).

    split_tensors(tree) -> (doc, tensors)     doc is JSON-ready; tensors: name -> tensor
    join_tensors(doc, tensors, where) -> tree  the same nest back, checked on the way

This is how a checkpoint stores `optimizer.state_dict()` and the scheduler's state without a
pickle: the tensors go to a safetensors file, everything else to JSON, and loading runs no code.
Python values JSON cannot say are tagged, and every object of the document is one tag, so a
value can never be mistaken for a tag:

    {"$dict": [[key, value], ...]}   a dict; keys are str or int (an optimizer's state is keyed by int)
    {"$tuple": [...]}                a tuple (AdamW's betas)
    {"$tensor": "t12"}               the tensor of that name in the table
    {"$float": "nan"|"inf"|"-inf"}   a float JSON has no literal for

Pure: no I/O, no torch import (tensors are duck-typed by the caller's table).
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import CheckpointError

MAX_DEPTH = 32  # optimizer state is 4 levels deep; a deeper document is not ours
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def split_tensors(tree: Any, is_tensor: Any) -> tuple[Any, dict[str, Any]]:
    """(doc, tensors): `tree` with each tensor replaced by a reference into `tensors`."""
    tensors: dict[str, Any] = {}

    def encode(value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError(f"state nested deeper than {MAX_DEPTH} levels")
        if is_tensor(value):
            name = f"t{len(tensors)}"
            tensors[name] = value
            return {"$tensor": name}
        if isinstance(value, float) and not math.isfinite(value):
            return {"$float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, dict):
            for key in value:
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    raise ValueError(f"state has a key of type {type(key).__name__}: only str and int keys are stored")
            return {"$dict": [[key, encode(v, depth + 1)] for key, v in value.items()]}
        if isinstance(value, tuple):
            return {"$tuple": [encode(v, depth + 1) for v in value]}
        if isinstance(value, list):
            return [encode(v, depth + 1) for v in value]
        raise ValueError(f"state holds a {type(value).__name__}, which is stored neither as JSON nor as a tensor")

    return encode(tree, 0), tensors


def join_tensors(doc: Any, tensors: dict[str, Any], where: str) -> Any:
    """The nest `split_tensors` took apart; a malformed document is a CheckpointError naming `where`.
    Every tensor must be referenced exactly once: a table and a document that disagree are not ours."""
    used: set[str] = set()

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{where}: {why}")

    def decode(value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise bad(f"nested deeper than {MAX_DEPTH} levels")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [decode(v, depth + 1) for v in value]
        if not isinstance(value, dict) or len(value) != 1:
            raise bad("an object that is not exactly one tag")
        ((tag, body),) = value.items()
        if tag == "$dict" and isinstance(body, list):
            return dict(_pair(item, bad, lambda v: decode(v, depth + 1)) for item in body)
        if tag == "$tuple" and isinstance(body, list):
            return tuple(decode(v, depth + 1) for v in body)
        if tag == "$tensor" and isinstance(body, str):
            if body not in tensors:
                raise bad(f"refers to a tensor {body[:40]!r} the tensor file does not hold")
            if body in used:
                raise bad(f"refers to tensor {body!r} twice")
            used.add(body)
            return tensors[body]
        if tag == "$float" and body in _FLOATS:
            return _FLOATS[body]
        raise bad(f"unknown tag {str(tag)[:40]!r}")

    tree = decode(doc, 0)
    if unused := sorted(set(tensors) - used):
        raise bad(f"the tensor file holds {len(unused)} tensor(s) the state does not use, e.g. {unused[0][:40]!r}")
    return tree


def _pair(item: Any, bad: Any, decode: Any) -> tuple[Any, Any]:
    if not isinstance(item, list) or len(item) != 2:
        raise bad("a dict entry that is not a [key, value] pair")
    key, value = item
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise bad("a dict key that is neither a string nor an integer")
    return key, decode(value)
