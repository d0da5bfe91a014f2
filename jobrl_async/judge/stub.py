"""The stub judge: deterministic verdicts computed locally. It is not an LLM.

A stand-in for dry runs, tests and benchmarks, honest about what it measures:

- language_consistency: a language identifier (py3langid) on each sentence of the offer;
  score = 10 x the share of the prose (by length) in the context's language;
- xml_format: the schema checks of `flow.offer.parse_offer`; score = 10 x the share that pass,
  YES only if all pass;
- context_inclusion: provided skills found in <required_skills> by normalised matching;
  score = 10 x the share included;
- skill_relevance: added skills the SkillBook has seen with that title or industry;
- skill_completeness: the SkillBook's expected skills for that title that the offer lists.

The first three are exact: the hybrid judge uses them as they are (`source="exact"`) and sends
only SKILL_CRITERIA to the LLM. Text addressing the evaluator is flagged, and cannot change a
score here: nothing below reads the offer's words as instructions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..flow.offer import CHECKS, ParsedOffer, added_skills, detect_language, match_skills, provided_skills_included
from ..flow.records import CRITERIA, Context, CriterionVerdict
from .prompts import JudgedOffer
from .skills import SkillBook

EXACT_CRITERIA = ("language_consistency", "xml_format", "context_inclusion")
SKILL_CRITERIA = ("skill_relevance", "skill_completeness")
MIN_SEGMENT_WORDS = 4


def exact_verdict(criterion: str, context: Context, offer: str | JudgedOffer) -> CriterionVerdict:
    """One of the three exact criteria, computed locally (`source="exact"`).

    Pass a `JudgedOffer` when judging several criteria, so the offer is parsed once.
    """
    if criterion not in EXACT_CRITERIA:
        raise ValueError(f"{criterion!r} is not an exact criterion; those are {EXACT_CRITERIA}")
    read = JudgedOffer.read(offer)
    parsed, flags = read.parsed, read.flags
    if criterion == "language_consistency":
        return _language(context, parsed, flags)
    if criterion == "xml_format":
        return _xml(parsed, flags)
    included, missing = provided_skills_included(context, parsed)
    return _verdict(
        "context_inclusion",
        share=len(included) / len(context.skills),
        all_good=not missing,
        missing=missing,
        flags=flags,
    )


def stub_verdict(criterion: str, context: Context, offer: str | JudgedOffer, book: SkillBook) -> CriterionVerdict:
    """Any of the five criteria, computed locally (`source="stub"`)."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}")
    read = JudgedOffer.read(offer)
    if criterion in EXACT_CRITERIA:
        return dataclasses.replace(exact_verdict(criterion, context, read), source="stub")
    if criterion == "skill_relevance":
        return _relevance(context, read.parsed, book, read.flags)
    return _completeness(context, read.parsed, book, read.flags)


def _verdict(
    name: str,
    share: float,
    all_good: bool,
    missing: Sequence[str] = (),
    irrelevant: Sequence[str] = (),
    flags: tuple[str, ...] = (),
    source: str = "exact",
) -> CriterionVerdict:
    return CriterionVerdict(
        name=name,
        answer="YES" if all_good else "NO",
        score=round(10.0 * share, 2),
        missing_skills=tuple(missing),
        irrelevant_skills=tuple(irrelevant),
        flags=flags,
        source=source,
    )


def _language(context: Context, parsed: ParsedOffer, flags: tuple[str, ...]) -> CriterionVerdict:
    """Share of the prose, by length, identified as the context's language.

    Sentence by sentence, so that an offer half in English scores about half; titles and
    skills are left out when the XML parsed, since French offers keep many English terms.
    A segment under MIN_SEGMENT_WORDS words is too short to identify on its own (measured:
    "Automate deployments" reads as French) and takes the language of the whole prose.
    """
    segments = parsed.prose or tuple(line for line in parsed.text.splitlines() if line.strip())
    total = sum(len(s) for s in segments)
    if total == 0:
        return _verdict("language_consistency", share=0.0, all_good=False, flags=flags)
    overall, _ = detect_language("\n".join(segments))

    def language_of(segment: str) -> str:
        return detect_language(segment)[0] if len(segment.split()) >= MIN_SEGMENT_WORDS else overall

    matching = sum(len(s) for s in segments if language_of(s) == context.language)
    return _verdict(
        "language_consistency",
        share=matching / total,
        all_good=matching == total,
        flags=flags,
    )


def _xml(parsed: ParsedOffer, flags: tuple[str, ...]) -> CriterionVerdict:
    share = len(parsed.passed) / len(CHECKS)
    return _verdict("xml_format", share=share, all_good=parsed.ok, flags=flags)


def _relevance(
    context: Context, parsed: ParsedOffer, book: SkillBook, flags: tuple[str, ...]
) -> CriterionVerdict:
    added = added_skills(context, parsed)
    if not added:  # nothing added: the task ("add relevant skills") was not done
        return _verdict("skill_relevance", share=0.0, all_good=False, flags=flags, source="stub")
    irrelevant = [s for s in added if not book.relevant(s, context)]
    return _verdict(
        "skill_relevance",
        share=1 - len(irrelevant) / len(added),
        all_good=not irrelevant,
        irrelevant=irrelevant,
        flags=flags,
        source="stub",
    )


def _completeness(
    context: Context, parsed: ParsedOffer, book: SkillBook, flags: tuple[str, ...]
) -> CriterionVerdict:
    expected = book.expected(context)
    if not expected:  # the book knows nothing to expect: judge only that skills are listed
        listed = bool(parsed.skills)
        return _verdict(
            "skill_completeness", share=float(listed), all_good=listed, flags=flags, source="stub"
        )
    present, missing = match_skills(expected, parsed.skills)
    return _verdict(
        "skill_completeness",
        share=len(present) / len(expected),
        all_good=not missing,
        missing=missing,
        flags=flags,
        source="stub",
    )
