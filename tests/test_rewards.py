"""Reward maths: the mean of the five criterion values, times 10; never a silent zero."""

from __future__ import annotations

import pytest

from jobrl_async.flow.records import CRITERIA, CriterionVerdict
from jobrl_async.flow.rewards import reward


def verdicts(**scores: float) -> dict[str, CriterionVerdict]:
    return {
        name: CriterionVerdict(name=name, answer="YES" if score == 10 else "NO", score=score)
        for name, score in scores.items()
    }


def test_seed_worked_example_gives_9_2() -> None:
    # language 1, XML 1, provided skills 1, relevance 0.9, completeness 0.7 -> 9.2
    criteria = verdicts(
        language_consistency=10,
        xml_format=10,
        context_inclusion=10,
        skill_relevance=9,
        skill_completeness=7,
    )
    assert reward(criteria) == 9.2
    assert reward(criteria) == pytest.approx(sum(v.value for v in criteria.values()) / 5 * 10)


def test_bounds_and_order_independence() -> None:
    assert reward(verdicts(**dict.fromkeys(CRITERIA, 10))) == 10.0
    assert reward(verdicts(**dict.fromkeys(CRITERIA, 0))) == 0.0
    scores = dict(zip(CRITERIA, (2.5, 10, 0, 7.5, 5)))
    backwards = dict(reversed(list(verdicts(**scores).items())))
    assert reward(backwards) == reward(verdicts(**scores)) == 5.0


def test_missing_criterion_is_an_error_not_a_zero() -> None:
    four = verdicts(**dict.fromkeys(CRITERIA[:4], 10))
    with pytest.raises(ValueError, match="skill_completeness"):
        reward(four)
    with pytest.raises(ValueError):
        reward({})


def test_unknown_or_mislabelled_criterion_is_an_error() -> None:
    criteria = verdicts(**dict.fromkeys(CRITERIA, 10))
    with pytest.raises(ValueError, match="politeness"):
        reward({**criteria, "politeness": criteria["xml_format"]})
    swapped = {**criteria, "xml_format": criteria["language_consistency"]}
    with pytest.raises(ValueError, match="xml_format"):
        reward(swapped)
