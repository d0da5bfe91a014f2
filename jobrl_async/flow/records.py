"""What flows between the stages: small typed records, validated where they are made.

    producer ──▶ StepPlan (its contexts) ──generator──▶ Trajectory ──judge──▶ ScoredTrajectory
             ──collector──▶ Group ──▶ learner
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Language = Literal["en", "fr"]
LANGUAGES: tuple[str, ...] = ("en", "fr")

CRITERIA: tuple[str, ...] = (
    "language_consistency",
    "xml_format",
    "context_inclusion",
    "skill_relevance",
    "skill_completeness",
)

Split = Literal["train", "validation"]
Outcome = Literal["scored", "judge_failed", "dropped"]


@dataclass(frozen=True, slots=True)
class Context:
    """One training context: what the policy is asked to write an offer for."""

    job_title: str
    language: Language
    skills: tuple[str, ...]
    industry: str | None = None
    index: int = -1  # position in the source dataset, for error messages and resume

    def __post_init__(self) -> None:
        if not self.job_title.strip():
            raise ValueError("job_title is empty")
        if self.language not in LANGUAGES:
            raise ValueError(f"language {self.language!r} is not one of {LANGUAGES}")
        if not self.skills:
            raise ValueError("skills is empty")

    def as_dict(self) -> dict:
        out = {"job_title": self.job_title, "language": self.language, "skills": list(self.skills)}
        if self.industry:
            out["industry"] = self.industry
        return out


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One training step: which contexts, and where it sits in the run."""

    step: int  # 1-based optimizer step
    epoch: int  # 0-based
    position: int  # batch index within the epoch
    contexts: tuple[Context, ...]

    def __post_init__(self) -> None:
        if self.step < 1 or self.epoch < 0 or self.position < 0 or not self.contexts:
            raise ValueError(f"bad step plan: step={self.step} epoch={self.epoch} position={self.position}")


@dataclass(frozen=True, slots=True)
class Trajectory:
    """One sampled offer, with what the learner needs to correct for policy lag."""

    context: Context
    split: Split
    step: int  # the training step this sample belongs to (>= 0)
    group: int  # index of the GRPO group (context) within the step
    attempt: int
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    completion_text: str
    logprobs: tuple[float, ...]  # of each sampled token under the sampling distribution
    truncated: bool  # hit max_new_tokens before EOS or </job_offer>
    policy_version: int

    def __post_init__(self) -> None:
        if self.step < 0 or self.group < 0 or self.attempt < 0 or self.policy_version < 0:
            raise ValueError("step, group, attempt and policy_version must be >= 0")
        if len(self.logprobs) != len(self.completion_ids):
            raise ValueError(
                f"{len(self.logprobs)} log-probs for {len(self.completion_ids)} completion tokens"
            )


@dataclass(frozen=True, slots=True)
class CriterionVerdict:
    """The judge's answer on one criterion; `score` is 0-10 as the judge gave it."""

    name: str
    answer: Literal["YES", "NO"]
    score: float
    missing_skills: tuple[str, ...] = ()
    irrelevant_skills: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    source: str = "llm"  # llm | exact (computed locally, deterministic)

    def __post_init__(self) -> None:
        if self.name not in CRITERIA:
            raise ValueError(f"unknown criterion {self.name!r}")
        if not 0.0 <= self.score <= 10.0:
            raise ValueError(f"score {self.score} is outside 0-10")

    @property
    def value(self) -> float:
        """The criterion's score in [0, 1]."""
        return self.score / 10.0

    def as_dict(self) -> dict:
        return {
            "answer": self.answer,
            "score": self.score,
            "missing_skills": list(self.missing_skills),
            "irrelevant_skills": list(self.irrelevant_skills),
            "flags": list(self.flags),
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """All five criteria for one offer, and the reward they make."""

    criteria: dict[str, CriterionVerdict]
    reward: float
    flags: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "criteria": {name: v.as_dict() for name, v in self.criteria.items()},
            "reward": self.reward,
            "flags": list(self.flags),
        }


@dataclass(frozen=True, slots=True)
class ScoredTrajectory:
    """A trajectory after the judge: scored, or failed with a reason (never a zero reward)."""

    trajectory: Trajectory
    outcome: Outcome
    verdict: Verdict | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if (self.outcome == "scored") != (self.verdict is not None):
            raise ValueError("a scored trajectory has a verdict and only a scored one does")
        if self.outcome != "scored" and not self.reason:
            raise ValueError(f"a {self.outcome} trajectory needs a reason")

    @property
    def reward(self) -> float | None:
        return self.verdict.reward if self.verdict else None


@dataclass(slots=True)
class Group:
    """One context's attempts at one step: the unit of GRPO advantages."""

    step: int
    index: int
    context: Context
    members: list[ScoredTrajectory] = field(default_factory=list)

    @property
    def scored(self) -> list[ScoredTrajectory]:
        return [m for m in self.members if m.outcome == "scored"]
