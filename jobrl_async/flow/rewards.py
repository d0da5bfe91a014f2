"""The reward of one offer: the mean of its five criterion values, times 10.

    reward = 10 x (1/5) x sum_c score_c / 10 = mean_c score_c        (each score_c in [0, 10])

The seed's worked example: language 1, XML 1, provided skills 1, relevance 0.9,
completeness 0.7 -> (1 + 1 + 1 + 0.9 + 0.7) / 5 x 10 = 9.2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .records import CRITERIA, CriterionVerdict


def reward(criteria: Mapping[str, CriterionVerdict]) -> float:
    """The reward in [0, 10] of an offer judged on all five criteria.

    A missing or unknown criterion is a ValueError, never a silent zero: an offer the judge
    did not fully score must not teach the policy anything.
    """
    missing = [name for name in CRITERIA if name not in criteria]
    unknown = sorted(name for name in criteria if name not in CRITERIA)
    if missing or unknown:
        raise ValueError(f"criteria missing {missing}, unknown {unknown}; expected {list(CRITERIA)}")
    mislabelled = [name for name, verdict in criteria.items() if verdict.name != name]
    if mislabelled:
        raise ValueError(f"verdicts filed under the wrong criterion: {mislabelled}")
    # The mean of the 0-10 scores equals 10 x the mean of score/10, without the rounding noise.
    return math.fsum(criteria[name].score for name in CRITERIA) / len(CRITERIA)
