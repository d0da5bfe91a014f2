"""A reply's `usage`, read as untrusted figures, and what it costs in dollars.

`usage` steers the limiter (the prompt count settles the charge at intake) and ends up in
counters, Prometheus and JSON logs, so a figure is taken only when it is a plain integer
(not a bool, a float, a string or NaN) between 0 and a ceiling a few times what the call
could cost (prompt estimate + reply budget): `prompt_tokens: 10**9` would move the pace a
week forward, a negative one would open the limiter, a string would crash a counter. A reply
whose usage fails that is still a reply: its usage is ignored (`read_usage` returns None) and
the client says so once per endpoint.

    usd = ((prompt - cached) x input + cached x cached_input + completion x output) / 1e6

with prices per million tokens (`judge.price_*_per_mtok`); reasoning tokens are part of
`completion_tokens` and billed as output; cached tokens are part of `prompt_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CEILING_FACTOR = 4  # a figure above this many times the call's whole budget is not believed
CEILING_FLOOR = 4096  # tokens: small calls still leave room for a chat format's overhead


@dataclass(frozen=True, slots=True)
class Usage:
    """One reply's token counts, as the server counted them (all checked, see `read_usage`)."""

    prompt: int
    completion: int
    reasoning: int = 0  # part of `completion`
    cached: int = 0  # part of `prompt`

    @property
    def total(self) -> int:
        return self.prompt + self.completion


@dataclass(frozen=True, slots=True)
class Prices:
    """Dollars per million tokens; 0 for all three: unknown, no dollars are reported."""

    input: float = 0.0
    cached_input: float = 0.0
    output: float = 0.0

    @property
    def known(self) -> bool:
        return self.input > 0 or self.cached_input > 0 or self.output > 0

    def usd(self, u: Usage) -> float:
        return ((u.prompt - u.cached) * self.input + u.cached * self.cached_input + u.completion * self.output) / 1e6


def _count(value: Any, ceiling: int) -> int | None:
    if type(value) is not int or not 0 <= value <= ceiling:  # bool is an int subclass: refused
        return None
    return value


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def read_usage(usage: Any, budget: int) -> Usage | None:
    """The reply's usage if every figure present is sane for a call of `budget` tokens
    (prompt estimate + reply budget), else None. Details missing count 0."""
    if usage is None:
        return None
    ceiling = max(CEILING_FLOOR, CEILING_FACTOR * budget)
    prompt = _count(_field(usage, "prompt_tokens"), ceiling)
    completion = _count(_field(usage, "completion_tokens"), ceiling)
    if prompt is None or completion is None:
        return None
    total = _field(usage, "total_tokens")
    if total is not None and _count(total, 2 * ceiling) is None:
        return None
    reasoning = _detail(usage, "completion_tokens_details", "reasoning_tokens", completion)
    cached = _detail(usage, "prompt_tokens_details", "cached_tokens", prompt)
    if reasoning is None or cached is None:
        return None
    return Usage(prompt, completion, reasoning, cached)


def _detail(usage: Any, group: str, name: str, whole: int) -> int | None:
    """A part of `whole` (reasoning of completion, cached of prompt); absent: 0; past `whole`: None."""
    value = _field(_field(usage, group), name)
    if value is None:
        return 0
    return _count(value, whole)
