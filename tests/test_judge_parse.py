"""Reading the judge's replies: tolerant of form, strict about the verdict itself."""

from __future__ import annotations

import pytest

from jobrl_async.judge.parse import MAX_LIST_ITEMS, MAX_REPLY_CHARS, ReplyError, parse_reply

PLAIN = '{"answer": "YES", "score": 8, "missing_skills": ["Docker"], "irrelevant_skills": []}'


def test_plain_json() -> None:
    verdict = parse_reply("skill_completeness", PLAIN)
    assert verdict.name == "skill_completeness"
    assert (verdict.answer, verdict.score, verdict.value) == ("YES", 8.0, 0.8)
    assert verdict.missing_skills == ("Docker",) and verdict.irrelevant_skills == ()
    assert verdict.source == "llm"


@pytest.mark.parametrize(
    "reply",
    [
        f"```json\n{PLAIN}\n```",
        f"```\n{PLAIN}\n```",
        f"Here is my evaluation:\n```json\n{PLAIN}\n```\nLet me know if you need more.",
        f"Sure. {PLAIN} The offer lists most skills.",
        f"I considered {{the context}} first, then answered: {PLAIN}",
        f'Context was {{"job_title": "x"}}; verdict: {PLAIN}',
        f"  \n{PLAIN}\n\n",
    ],
)
def test_fenced_or_prose_wrapped_json(reply: str) -> None:
    verdict = parse_reply("skill_completeness", reply)
    assert (verdict.answer, verdict.score, verdict.missing_skills) == ("YES", 8.0, ("Docker",))


@pytest.mark.parametrize(
    ("score", "expected"),
    [(8, 8.0), (7.5, 7.5), ('"8"', 8.0), ('"8/10"', 8.0), ('"8 / 10"', 8.0), ('"7,5"', 7.5), (0, 0.0), (10, 10.0)],
)
def test_score_forms(score: object, expected: float) -> None:
    assert parse_reply("xml_format", f'{{"answer": "NO", "score": {score}}}').score == expected


@pytest.mark.parametrize(("answer", "expected"), [("yes", "YES"), (" Yes ", "YES"), ("no", "NO"), ("OUI", "YES"), ("non", "NO")])
def test_answer_forms(answer: str, expected: str) -> None:
    assert parse_reply("xml_format", f'{{"answer": "{answer}", "score": 5}}').answer == expected


def test_lists_missing_null_or_as_one_string() -> None:
    verdict = parse_reply("skill_relevance", '{"answer": "NO", "score": 6, "missing_skills": null}')
    assert verdict.missing_skills == () and verdict.irrelevant_skills == ()
    verdict = parse_reply("skill_relevance", '{"answer": "NO", "score": 6, "irrelevant_skills": "Cooking, Knitting;  "}')
    assert verdict.irrelevant_skills == ("Cooking", "Knitting")
    many = ", ".join(f'"s{i}"' for i in range(100))
    verdict = parse_reply("skill_relevance", f'{{"answer": "NO", "score": 1, "irrelevant_skills": [{many}]}}')
    assert len(verdict.irrelevant_skills) == MAX_LIST_ITEMS


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ('{"answer": "YES", "score": 11}', "outside 0-10"),
        ('{"answer": "YES", "score": -1}', "outside 0-10"),
        ('{"answer": "YES", "score": "12/10"}', "outside 0-10"),
        ('{"answer": "YES", "score": "80/100"}', "not a number"),
        ('{"answer": "YES", "score": "eight"}', "not a number"),
        ('{"answer": "YES", "score": null}', "not a number"),
        ('{"answer": "YES", "score": true}', "not a number"),
        ('{"answer": "YES", "score": NaN}', "not a number"),
        ('{"answer": "YES"}', "no score"),
        ('{"score": 7}', "no answer"),
        ('{"answer": "MAYBE", "score": 7}', "not YES or NO"),
        ('{"answer": 1, "score": 7}', "not YES or NO"),
        ('{"answer": "YES", "score": 7, "missing_skills": [{"name": "x"}]}', "not a list of strings"),
        ('{"answer": "YES", "score": 7, "missing_skills": 3}', "not a list of strings"),
        ("The offer is good, I'd give it 9/10.", "no JSON object"),
        ('{"answer": "YES", "score": 9', "no JSON object"),
        ("[8]", "no JSON object"),
        ("", "no JSON object"),
    ],
)
def test_bad_replies_are_errors_never_zero_or_clamped(reply: str, reason: str) -> None:
    with pytest.raises(ReplyError, match=reason) as caught:
        parse_reply("context_inclusion", reply)
    assert isinstance(caught.value, ValueError)  # callers may catch either
    assert "context_inclusion" in str(caught.value)


def test_size_bounded() -> None:
    with pytest.raises(ReplyError, match="limit"):
        parse_reply("xml_format", PLAIN + " " * MAX_REPLY_CHARS)
    # Thousands of stray braces before the answer: bounded work, then an error.
    with pytest.raises(ReplyError, match="no JSON object"):
        parse_reply("xml_format", "{" * 20000 + PLAIN)


def test_unknown_criterion_is_a_programming_error_not_a_reply_error() -> None:
    with pytest.raises(ValueError) as caught:
        parse_reply("politeness", PLAIN)
    assert not isinstance(caught.value, ReplyError)
