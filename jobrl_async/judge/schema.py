"""The verdicts' JSON schemas, sent as strict structured outputs where an endpoint takes them.

A strict schema (OpenAI, Azure, vLLM) makes the server decode only replies of this shape: no
prose around the object, no missing key, no extra criterion. Strict mode wants
`additionalProperties: false` on every object and every property listed in `required`, and
takes no minLength / pattern / minimum / minItems, so the ranges (score 0-10, list lengths) stay
the parser's to check: the parser reads whatever comes, whichever format the endpoint fell
back to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def verdict_schema() -> dict[str, Any]:
    """One criterion's verdict: {"answer", "score", "missing_skills", "irrelevant_skills"}."""
    skills = {"type": "array", "items": {"type": "string"}}
    return {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["YES", "NO"]},
            "score": {"type": "number"},
            "missing_skills": skills,
            "irrelevant_skills": skills,
        },
        "required": ["answer", "score", "missing_skills", "irrelevant_skills"],
        "additionalProperties": False,
    }


def criterion_format(criterion: str) -> dict[str, Any]:
    """`response_format.json_schema` of a per-criterion call."""
    return {"name": "criterion_verdict", "strict": True, "schema": verdict_schema(),
            "description": f"The verdict on the criterion {criterion}"}


def offer_format(criteria: Sequence[str]) -> dict[str, Any]:
    """`response_format.json_schema` of a per-offer call: one verdict per criterion, keyed by name."""
    schema = {
        "type": "object",
        "properties": {name: verdict_schema() for name in criteria},
        "required": list(criteria),
        "additionalProperties": False,
    }
    return {"name": "offer_verdicts", "strict": True, "schema": schema}
