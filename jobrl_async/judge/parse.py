"""What the LLM judge answered: one CriterionVerdict, or a ReplyError (retry the call).

Accepted: the JSON object alone, fenced in markdown (```json ... ```), or wrapped in prose
(the first balanced object that looks like an answer). Tolerated: "score" as "8", "8.5",
"8,5" or "8/10"; "yes"/"Yes" (and "OUI"/"NON"); missing or null lists; a list given as one
comma-separated string. Refused: a missing or invalid answer, a missing, non-numeric or
out-of-range score. A refused reply is a failure of that call, never a zero and never
clamped into range: a reward built from a guess teaches the policy noise.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from ..records import CRITERIA, CriterionVerdict

MAX_REPLY_CHARS = 32 * 1024  # a verdict is ~200 characters; max_tokens keeps real replies small
MAX_CANDIDATES = 64  # `{` positions tried in prose, so a brace-heavy reply stays linear-ish
MAX_LIST_ITEMS = 20
MAX_SKILL_CHARS = 120

ANSWERS: dict[str, Literal["YES", "NO"]] = {"YES": "YES", "NO": "NO", "OUI": "YES", "NON": "NO"}
_FENCE = re.compile(r"```(?:json|JSON)?\s*(\{.*?\})\s*```", re.DOTALL)
_SCORE_TEXT = re.compile(r"^\s*([0-9]+(?:[.,][0-9]+)?)\s*(?:/\s*10)?\s*$")


class ReplyError(ValueError):
    """The judge's reply could not be read as a verdict (the call failed; retry it)."""


def parse_reply(criterion: str, text: str) -> CriterionVerdict:
    """The verdict in the judge's `text` for `criterion`, or ReplyError saying what is wrong."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}")
    if len(text) > MAX_REPLY_CHARS:
        raise ReplyError(f"{criterion}: reply is {len(text)} characters, limit {MAX_REPLY_CHARS}")
    obj = find_json_object(text)
    if obj is None:
        raise ReplyError(f"{criterion}: no JSON object in reply {_excerpt(text)}")
    return CriterionVerdict(
        name=criterion,
        answer=_answer(criterion, obj),
        score=_score(criterion, obj),
        missing_skills=_skills(criterion, obj, "missing_skills"),
        irrelevant_skills=_skills(criterion, obj, "irrelevant_skills"),
        source="llm",
    )


def find_json_object(text: str) -> dict[str, Any] | None:
    """The reply's JSON object: whole, fenced, or the first answer-like object in prose."""
    stripped = text.strip()
    candidates = [stripped]
    candidates += [m.group(1) for m in _FENCE.finditer(text)]
    for candidate in candidates:
        obj = _loads(candidate)
        if obj is not None:
            return obj
    decoder = json.JSONDecoder()
    starts = [i for i, c in enumerate(text) if c == "{"][:MAX_CANDIDATES]
    for start in starts:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and ("answer" in obj or "score" in obj):
            return obj
    return None


def _loads(text: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _answer(criterion: str, obj: dict[str, Any]) -> Literal["YES", "NO"]:
    if "answer" not in obj:
        raise ReplyError(f"{criterion}: reply has no answer")
    value = obj["answer"]
    answer = ANSWERS.get(value.strip().upper()) if isinstance(value, str) else None
    if answer is None:
        raise ReplyError(f"{criterion}: answer {_excerpt(value)} is not YES or NO")
    return answer


def _score(criterion: str, obj: dict[str, Any]) -> float:
    if "score" not in obj:
        raise ReplyError(f"{criterion}: reply has no score")
    value = obj["score"]
    score: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        score = float(value)
    elif isinstance(value, str):
        match = _SCORE_TEXT.match(value)
        score = float(match.group(1).replace(",", ".")) if match else None
    if score is None or not math.isfinite(score):
        raise ReplyError(f"{criterion}: score {_excerpt(value)} is not a number from 0 to 10")
    if not 0.0 <= score <= 10.0:
        raise ReplyError(f"{criterion}: score {score:g} is outside 0-10")
    return score


def _skills(criterion: str, obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if isinstance(value, str):  # "Python, SQL": a list written as one string
        value = re.split(r"[,;\n]", value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReplyError(f"{criterion}: {key} {_excerpt(value)} is not a list of strings")
    skills = (" ".join(v.split())[:MAX_SKILL_CHARS] for v in value)
    return tuple(s for s in skills if s)[:MAX_LIST_ITEMS]


def _excerpt(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return repr(text[:80] + ("..." if len(text) > 80 else ""))
