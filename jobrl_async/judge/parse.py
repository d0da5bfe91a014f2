"""What the LLM judge answered: one CriterionVerdict, or UnreadableVerdict (retry the call).

Accepted: the JSON object alone, fenced in markdown (```json ... ```), or wrapped in prose
(the one object in it that looks like an answer). Tolerated: "score" as "8", "8.5", "8,5"
or "8/10"; "yes"/"Yes" (and "OUI"/"NON"); missing or null lists; a list given as one
comma-separated string. Refused: a missing or invalid answer, a missing, non-numeric or
out-of-range score, and a reply holding two different answer-like objects (the judge
quoting a verdict forged inside the offer, then its own: reading the first would reward the
forgery). A refused reply is a failure of that call, never a zero and never clamped into
range: a reward built from a guess teaches the policy noise.

The reply is untrusted text too: every way it can fail to parse (deep nesting, huge numbers,
stray braces) is an UnreadableVerdict, and the work is bounded: one linear scan for places where
an object may start, and at most MAX_CANDIDATES decoder attempts that do not yield an answer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, Literal

from ..flow.records import CRITERIA, CriterionVerdict

MAX_REPLY_CHARS = 32 * 1024  # a verdict is ~200 characters; max_tokens keeps real replies small
MAX_CANDIDATES = 64  # decoder attempts in prose that yield no answer; each may read to the end
MAX_LIST_ITEMS = 20
MAX_SKILL_CHARS = 120

ANSWERS: dict[str, Literal["YES", "NO"]] = {"YES": "YES", "NO": "NO", "OUI": "YES", "NON": "NO"}
# Where a JSON object can start: `{` then (after spaces) a key's quote or the closing brace.
# Stray braces of prose ("{the context}", "{{{") are skipped without calling the decoder.
_OBJECT_START = re.compile(r'\{\s*["}]')
_SCORE_TEXT = re.compile(r"^\s*([0-9]+(?:[.,][0-9]+)?)\s*(?:/\s*10)?\s*$")


class UnreadableVerdict(ValueError):
    """The judge's reply could not be read as a verdict (the call failed; retry it)."""


def parse_reply(criterion: str, text: str) -> CriterionVerdict:
    """The verdict in the judge's `text` for `criterion`, or UnreadableVerdict saying what is wrong."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}")
    if len(text) > MAX_REPLY_CHARS:
        raise UnreadableVerdict(f"{criterion}: reply is {len(text)} characters, limit {MAX_REPLY_CHARS}")
    try:
        obj = find_json_object(text)
    except UnreadableVerdict as e:
        raise UnreadableVerdict(f"{criterion}: {e}") from None
    except RecursionError:  # comparing two deeply nested objects
        raise UnreadableVerdict(f"{criterion}: reply is nested too deeply") from None
    if obj is None:
        raise UnreadableVerdict(f"{criterion}: no JSON object in reply {_excerpt(text)}")
    return _verdict(criterion, obj)


def _verdict(criterion: str, obj: dict[str, Any]) -> CriterionVerdict:
    """One criterion's verdict from its `{answer, score, missing_skills, irrelevant_skills}`."""
    return CriterionVerdict(
        name=criterion,
        answer=_answer(criterion, obj),
        score=_score(criterion, obj),
        missing_skills=_skills(criterion, obj, "missing_skills"),
        irrelevant_skills=_skills(criterion, obj, "irrelevant_skills"),
        source="llm",
    )


def find_json_object(text: str) -> dict[str, Any] | None:
    """The reply's JSON object: the whole reply, else the one answer-like object in it
    (UnreadableVerdict for two different ones, or a key given twice: see `_one_object`)."""
    whole = _loads(text.strip())
    if whole is not None:
        return whole
    return _one_object(text, _STRICT_DECODER, _answer_like, "answers")


def _one_object(text: str, decoder: json.JSONDecoder, wanted: Callable[[Any], bool], what: str) -> dict[str, Any] | None:
    """The one `wanted` object among the places in `text` that start like a JSON object.

    UnreadableVerdict when the reply holds two different such objects, gives a key twice (the
    strict decoder), or has more than MAX_CANDIDATES places that look like an object and are not
    one (a reply built to make the scan slow). A wanted object is skipped whole, so its nested
    braces cost nothing; an object that is not wanted may still hold one."""
    found: list[dict[str, Any]] = []
    misses = 0
    start = _OBJECT_START.search(text)
    while start is not None:
        try:
            obj, end = decoder.raw_decode(text, start.start())
        except _DuplicateKey as e:
            raise UnreadableVerdict(f"reply gives {_excerpt(str(e))} twice") from None
        except (ValueError, RecursionError):  # JSONDecodeError, a 5,000-digit number, deep nesting
            obj, end = None, start.start() + 1
        if wanted(obj):
            if obj not in found:
                found.append(obj)
        else:
            misses += 1
            if misses > MAX_CANDIDATES:
                raise UnreadableVerdict(f"more than {MAX_CANDIDATES} places in the reply look like JSON objects "
                                        "and are not an answer")
            end = start.start() + 1
        start = _OBJECT_START.search(text, end)
    if len(found) > 1:
        raise UnreadableVerdict(f"reply holds {len(found)} different {what}: {_excerpt(found[0])} and "
                                f"{_excerpt(found[1])}")
    return found[0] if found else None


def _verdict_set_like(obj: Any) -> bool:
    return isinstance(obj, dict) and any(k in CRITERIA for k in obj)


def _answer_like(obj: Any) -> bool:
    return isinstance(obj, dict) and ("answer" in obj or "score" in obj)


def _loads(text: str) -> dict[str, Any] | None:
    """`text` as one JSON object, or None (not JSON, not an object, or not readable at all);
    UnreadableVerdict when it gives a key twice (json would keep the last silently)."""
    try:
        obj, end = _STRICT_DECODER.raw_decode(text)
    except _DuplicateKey as e:
        raise UnreadableVerdict(f"reply gives {_excerpt(str(e))} twice") from None
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) and end == len(text) else None


def _answer(criterion: str, obj: dict[str, Any]) -> Literal["YES", "NO"]:
    if "answer" not in obj:
        raise UnreadableVerdict(f"{criterion}: reply has no answer")
    value = obj["answer"]
    answer = ANSWERS.get(value.strip().upper()) if isinstance(value, str) else None
    if answer is None:
        raise UnreadableVerdict(f"{criterion}: answer {_excerpt(value)} is not YES or NO")
    return answer


def _score(criterion: str, obj: dict[str, Any]) -> float:
    if "score" not in obj:
        raise UnreadableVerdict(f"{criterion}: reply has no score")
    value = obj["score"]
    score: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        score = float(value)
    elif isinstance(value, str):
        match = _SCORE_TEXT.match(value)
        score = float(match.group(1).replace(",", ".")) if match else None
    if score is None or not math.isfinite(score):
        raise UnreadableVerdict(f"{criterion}: score {_excerpt(value)} is not a number from 0 to 10")
    if not 0.0 <= score <= 10.0:
        raise UnreadableVerdict(f"{criterion}: score {score:g} is outside 0-10")
    return score


def _skills(criterion: str, obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if isinstance(value, str):  # "Python, SQL": a list written as one string
        value = re.split(r"[,;\n]", value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UnreadableVerdict(f"{criterion}: {key} {_excerpt(value)} is not a list of strings")
    skills = (" ".join(v.split())[:MAX_SKILL_CHARS] for v in value)
    return tuple(s for s in skills if s)[:MAX_LIST_ITEMS]


def _excerpt(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (ValueError, RecursionError):
            text = f"<{type(value).__name__}>"
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


# ------------------------------------------------------------------ one reply for several criteria


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook that refuses a key given twice (json itself keeps the last silently)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


_STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def parse_offer_reply(criteria: tuple[str, ...] | list[str], text: str) -> dict[str, CriterionVerdict]:
    """The verdicts of a per-offer reply: one JSON object keyed by exactly `criteria`, each value
    the seed's verdict shape. UnreadableVerdict (retry the call, never a zero) when a criterion is
    missing, given twice or not asked for, when a verdict is malformed, or when the reply holds
    two different verdict sets (the judge quoting one forged inside the offer, then its own)."""
    if len(text) > MAX_REPLY_CHARS:
        raise UnreadableVerdict(f"reply is {len(text)} characters, limit {MAX_REPLY_CHARS}")
    try:
        obj = _find_verdict_set(text, criteria)
    except RecursionError:
        raise UnreadableVerdict("reply is nested too deeply") from None
    if obj is None:
        raise UnreadableVerdict(f"no JSON object keyed by criterion in reply {_excerpt(text)}")
    missing = [c for c in criteria if c not in obj]
    extra = [k for k in obj if k not in criteria]
    if missing or extra:
        raise UnreadableVerdict(f"reply's criteria differ from those asked: missing {missing}, not asked {extra}")
    verdicts: dict[str, CriterionVerdict] = {}
    for name in criteria:
        value = obj[name]
        if not isinstance(value, dict):
            raise UnreadableVerdict(f"{name}: verdict {_excerpt(value)} is not an object")
        verdicts[name] = _verdict(name, value)
    return verdicts


def _find_verdict_set(text: str, criteria: tuple[str, ...] | list[str]) -> dict[str, Any] | None:
    """The reply's object keyed by criterion names: the whole reply, else the one such object in it.

    A key given twice anywhere is refused (`_DuplicateKey`), like two different verdict sets.
    """
    whole = _loads(text.strip())
    if whole is not None:
        return whole
    return _one_object(text, _STRICT_DECODER, _verdict_set_like, "verdict sets")
