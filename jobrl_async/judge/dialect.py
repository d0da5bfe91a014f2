"""Which Chat Completions dialect an endpoint speaks, learnt from its 400s, never from a name.

Two dialects exist today. The classic one (gpt-4o, gpt-4.1, most local servers) takes
`temperature: 0` and `max_tokens`. Reasoning models (gpt-5*, o3, o4-mini) refuse both with a
400 and take `max_completion_tokens` (hidden reasoning plus the visible answer) and
`reasoning_effort` instead, whose accepted values differ by model. Azure deployment names are
arbitrary, so nothing here looks at a model's name: `auto` starts classic, and each 400 that
names a parameter or a value moves the endpoint one step (`adapt`), until a request passes.

    refusal (400)                                        change
    'max_tokens' unsupported / use max_completion_tokens  -> reasoning
    'temperature' unsupported (value or parameter)        -> no temperature (classic -> reasoning)
    'max_completion_tokens' unrecognised (old api-version) -> classic
    'reasoning_effort' value unsupported                  -> the nearest value the 400 lists
    'reasoning_effort' unsupported / unrecognised         -> no reasoning_effort
    'response_format' of type json_schema unsupported     -> json_object
    'response_format' unsupported                         -> text (prose, parsed as ever)

Every function here is pure: the client keeps one `Dialect` per endpoint and asks `adapt`
what a refusal means; the reasoning allowance (`ReasoningBudget`) learns from the replies.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Kind = Literal["classic", "reasoning"]
Format = Literal["json_schema", "json_object", "text"]
EFFORTS = ("none", "minimal", "low", "medium", "high")  # lowest first


@dataclass(frozen=True)
class Dialect:
    """What an endpoint is sent: the parameter names, the effort, the reply format."""

    kind: Kind = "classic"
    effort: str | None = None  # reasoning_effort sent (reasoning only); None: not sent
    temperature: bool = True  # send temperature 0 (classic only: reasoning models take the default 1)
    response_format: Format = "json_schema"

    def describe(self) -> dict[str, Any]:
        return {"dialect": self.kind, "reasoning_effort": self.effort, "response_format": self.response_format}


def initial(configured: str, effort: str, response_format: Format) -> Dialect:
    """The dialect a fresh endpoint starts with: `auto` and `classic` start classic."""
    if configured == "reasoning":
        return reasoning(Dialect(response_format=response_format), effort)
    return Dialect(response_format=response_format)


def reasoning(d: Dialect, effort: str) -> Dialect:
    """`d` switched to the reasoning dialect with the wanted effort (`lowest` tries `none` first)."""
    return replace(d, kind="reasoning", effort="none" if effort == "lowest" else effort, temperature=False)


def request_body(d: Dialect, model: str, messages: list[dict], answer_tokens: int, allowance: int,
                 schema: dict | None) -> dict[str, Any]:
    """The Chat Completions body in dialect `d`; `allowance`: reasoning tokens on top of the answer's."""
    body: dict[str, Any] = {"model": model, "messages": messages}
    if d.kind == "classic":
        body["max_tokens"] = answer_tokens
    else:
        body["max_completion_tokens"] = answer_tokens + allowance
        if d.effort is not None:
            body["reasoning_effort"] = d.effort
    if d.temperature:
        body["temperature"] = 0
    if d.response_format == "json_schema" and schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif d.response_format in ("json_schema", "json_object"):
        body["response_format"] = {"type": "json_object"}
    return body


@dataclass(frozen=True)
class Refusal:
    """A 400's body as the server wrote it: the parameter it names, its code, its message."""

    param: str
    code: str
    message: str

    @classmethod
    def of(cls, body: Any, message: str) -> "Refusal":
        inner = body.get("error", body) if isinstance(body, dict) else {}
        inner = inner if isinstance(inner, dict) else {}
        text = inner.get("message") if isinstance(inner.get("message"), str) else message
        return cls(str(inner.get("param") or ""), str(inner.get("code") or ""), str(text or "")[:2000])

    def names(self, parameter: str) -> bool:
        return self.param == parameter or f"'{parameter}'" in self.message or f" {parameter} " in f" {self.message} "


_UNRECOGNISED = re.compile(r"unrecognized request arguments? supplied:\s*([a-z_, ]+)", re.I)
_SUPPORTED = re.compile(r"supported values are:?\s*(.+)", re.I)
_QUOTED = re.compile(r"'([a-z_]+)'")


def adapt(d: Dialect, refusal: Refusal, wanted_effort: str) -> Dialect | None:
    """The dialect to try after `refusal`, or None when it is not about the dialect (the request
    is then refused for its content, as before). Pure: the caller guards against cycles."""
    message = refusal.message.lower()
    unrecognised = _UNRECOGNISED.search(refusal.message)
    if unrecognised:  # old Azure api-versions: the parameter is not known at all
        names = unrecognised.group(1).lower()
        if "max_completion_tokens" in names:
            return replace(d, kind="classic", effort=None, temperature=True)
        if "reasoning_effort" in names:
            return replace(d, effort=None)
        if "response_format" in names and d.response_format != "text":
            return replace(d, response_format="text")
        return None
    if (refusal.names("max_tokens") and "max_completion_tokens" in message) or \
            (refusal.param == "max_tokens" and refusal.code == "unsupported_parameter"):
        return reasoning(d, wanted_effort) if d.kind == "classic" else None
    if refusal.names("temperature") and ("unsupported" in message or refusal.code.startswith("unsupported")):
        if d.kind == "classic":
            return reasoning(d, wanted_effort)
        return replace(d, temperature=False) if d.temperature else None
    if refusal.names("reasoning_effort"):
        return _effort_refused(d, refusal, wanted_effort)
    if "json_schema" in message and d.response_format == "json_schema":
        return replace(d, response_format="json_object")
    if refusal.names("response_format") and d.response_format != "text":  # no structured output at all
        return replace(d, response_format="text")
    return None


def _effort_refused(d: Dialect, refusal: Refusal, wanted: str) -> Dialect | None:
    listed = _SUPPORTED.search(refusal.message)
    if listed:
        supported = [v for v in _QUOTED.findall(listed.group(1).lower()) if v in EFFORTS]
        choice = nearest_effort(supported, wanted)
        return replace(d, effort=choice) if choice and choice != d.effort else None
    if d.effort is not None:  # the parameter itself is not taken (o1-mini)
        return replace(d, effort=None)
    return None


def nearest_effort(supported: list[str], wanted: str) -> str | None:
    """`lowest`: the lowest supported; another value: it, else the closest above, else below."""
    ranked = sorted((v for v in supported if v in EFFORTS), key=EFFORTS.index)
    if not ranked:
        return None
    if wanted == "lowest" or wanted not in EFFORTS:
        return ranked[0]
    at = EFFORTS.index(wanted)
    above = [v for v in ranked if EFFORTS.index(v) >= at]
    return above[0] if above else ranked[-1]


# ------------------------------------------------------------------ the reasoning allowance

# What a first call reserves for reasoning, by effort, before any reply was seen.
FIRST_ALLOWANCE = {None: 1024, "none": 64, "minimal": 256, "low": 1024, "medium": 2048, "high": 4096}
ALLOWANCE_FLOOR = 64  # tokens, whatever the replies: a few reasoning tokens are spent even at none
ALLOWANCE_MARGIN = 1.25  # over the recent high percentile
ALLOWANCE_QUANTILE = 0.95
ALLOWANCE_WINDOW = 200  # replies remembered


@dataclass
class ReasoningBudget:
    """Reasoning tokens to allow on top of the answer's budget, learnt from the replies.

    Azure charges `max_completion_tokens` at intake, so the allowance is what the replies need:
    `margin x` their recent 95th percentile, at least the floor, at most `cap`
    (`judge.max_reasoning_tokens`). A reply emptied at the budget asks for `boosted()` once."""

    cap: int
    seen: deque[int] = field(default_factory=lambda: deque(maxlen=ALLOWANCE_WINDOW))

    def allowance(self, effort: str | None) -> int:
        if not self.seen:
            return min(self.cap, FIRST_ALLOWANCE.get(effort, FIRST_ALLOWANCE[None]))
        ordered = sorted(self.seen)
        high = ordered[min(len(ordered) - 1, math.ceil(ALLOWANCE_QUANTILE * len(ordered)) - 1)]
        return min(self.cap, max(ALLOWANCE_FLOOR, math.ceil(high * ALLOWANCE_MARGIN)))

    def boosted(self, effort: str | None) -> int:
        """The allowance of a retry after a reply cut by reasoning: four times, within the cap."""
        return min(self.cap, max(4 * self.allowance(effort), 4 * ALLOWANCE_FLOOR))

    def learn(self, reasoning_tokens: int) -> None:
        self.seen.append(max(0, reasoning_tokens))


# What `plan` assumes before any reply: the reasoning tokens a verdict typically takes by effort
# (mean), and so the steady allowance the budget above settles on (margin x a high percentile,
# taken as 1.5 x the mean). `jobrl-async plan` says it assumed them; a run logs what it learnt.
TYPICAL_REASONING = {"none": 0.0, "minimal": 16.0, "low": 320.0, "medium": 1200.0, "high": 3200.0}


def typical_allowance(effort: str | None, cap: int) -> int:
    mean = TYPICAL_REASONING.get(effort or "", FIRST_ALLOWANCE[None])
    return min(cap, max(ALLOWANCE_FLOOR, math.ceil(1.5 * mean * ALLOWANCE_MARGIN)))
