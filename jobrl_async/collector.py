"""The reward collector: gathers judged trajectories into GRPO groups and validation scores.

Every trajectory the generator makes ends here as `scored`, `judge_failed` or `dropped`; a
step's training groups go to the learner once all of its members are accounted for, and a
validation round becomes one score (mean reward over scored trajectories, failures reported
beside it, never counted as zeros).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from .flow.records import Group, ScoredTrajectory, Split, StepPlan


@dataclass
class Tally:
    scored: int = 0
    judge_failed: int = 0
    dropped: int = 0

    def add(self, outcome: str, n: int = 1) -> None:
        setattr(self, outcome, getattr(self, outcome) + n)

    def merge(self, other: "Tally") -> None:
        for name in ("scored", "judge_failed", "dropped"):
            self.add(name, getattr(other, name))

    @property
    def total(self) -> int:
        return self.scored + self.judge_failed + self.dropped

    def as_dict(self) -> dict[str, int]:
        return {"scored": self.scored, "judge_failed": self.judge_failed, "dropped": self.dropped}


@dataclass
class Learning:
    """What became of the training trajectories the judge finished (scored or judge_failed: paid
    for): learned in a step, or left unlearned (a stop came first). At the end of a run
    `judged == learned + unlearned`."""

    judged: int = 0
    learned: int = 0
    unlearned: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"judged": self.judged, "learned": self.learned, "unlearned": self.unlearned}


@dataclass
class StepBatch:
    """A training step whose trajectories are all accounted for: ready for the learner."""

    plan: StepPlan
    groups: list[Group]
    tally: Tally

    @property
    def step(self) -> int:
        return self.plan.step

    @property
    def judged(self) -> int:
        return self.tally.scored + self.tally.judge_failed

    def injection_flags(self) -> dict[str, int]:
        """Offers of this step flagged as addressing the judge: {"offers": n, FLAG: n, ...}."""
        flagged = [m.verdict.flags for g in self.groups for m in g.members if m.verdict and m.verdict.flags]
        counts = {"offers": len(flagged)}
        for flags in flagged:
            for flag in flags:
                counts[flag] = counts.get(flag, 0) + 1
        return counts

    @property
    def rewards(self) -> list[float]:
        return [m.reward for g in self.groups for m in g.scored if m.reward is not None]


@dataclass
class ValidationResult:
    step: int
    policy_version: int
    score: float | None  # None when no trajectory could be scored
    tally: Tally

    @property
    def judge_failed_share(self) -> float:
        return self.tally.judge_failed / self.tally.total if self.tally.total else 0.0


@dataclass
class _Pending:
    expected: int
    groups: dict[int, Group]
    plan: StepPlan | None = None
    tally: Tally = field(default_factory=Tally)
    versions: list[int] = field(default_factory=list)


class Collector:
    def __init__(self) -> None:
        self._pending: dict[tuple[Split, int], _Pending] = {}
        self.tally = Tally()  # every trajectory of the run, by outcome
        self.learning = Learning()  # the judged training trajectories: learned or not

    def expect_training(self, plan: StepPlan, attempts: int) -> None:
        groups = {i: Group(plan.step, i, c) for i, c in enumerate(plan.contexts)}
        self._pending[("train", plan.step)] = _Pending(len(groups) * attempts, groups, plan)

    def expect_validation(self, step: int, contexts: list[Any], attempts: int) -> None:
        groups = {i: Group(step, i, c) for i, c in enumerate(contexts)}
        self._pending[("validation", step)] = _Pending(len(groups) * attempts, groups)

    def add(self, st: ScoredTrajectory) -> StepBatch | ValidationResult | None:
        t = st.trajectory
        key = (t.split, t.step)
        pending = self._pending.get(key)
        if pending is None:
            raise RuntimeError(f"unexpected trajectory for {t.split} step {t.step}")
        pending.groups[t.group].members.append(st)
        pending.tally.add(st.outcome)
        pending.versions.append(t.policy_version)
        self.tally.add(st.outcome)
        if t.split == "train" and st.outcome != "dropped":
            self.learning.judged += 1
        if pending.tally.total < pending.expected:
            return None
        del self._pending[key]
        return self._complete(key[0], t.step, pending)

    def drop(self, split: Split, step: int, n: int) -> StepBatch | ValidationResult | None:
        """`n` trajectories of this step will never arrive (e.g. abandoned at shutdown)."""
        pending = self._pending.get((split, step))
        if pending is None or n <= 0:
            return None
        pending.tally.add("dropped", n)
        self.tally.add("dropped", n)
        if pending.tally.total < pending.expected:
            return None
        del self._pending[(split, step)]
        return self._complete(split, step, pending)

    def abandon_all(self) -> dict[str, int]:
        """Count everything still expected as dropped, and the judged members of unfinished
        training steps as unlearned; returns {"train:3": n, ...} (the dropped) for the log."""
        dropped = {}
        for (split, step), pending in sorted(self._pending.items()):
            missing = pending.expected - pending.tally.total
            self.tally.add("dropped", missing)
            dropped[f"{split}:{step}"] = missing
            if split == "train":
                self.learning.unlearned += pending.tally.scored + pending.tally.judge_failed
        self._pending.clear()
        return dropped

    def pending_judged(self) -> dict[str, int]:
        """Judged (scored or judge_failed) members of the steps not complete yet, {"train:3": n}."""
        return {f"{split}:{step}": p.tally.scored + p.tally.judge_failed
                for (split, step), p in sorted(self._pending.items()) if p.tally.scored + p.tally.judge_failed}

    @property
    def pending_steps(self) -> list[tuple[Split, int]]:
        return sorted(self._pending)

    @staticmethod
    def _complete(split: Split, step: int, pending: _Pending) -> StepBatch | ValidationResult:
        groups = [pending.groups[i] for i in sorted(pending.groups)]
        if split == "train":
            assert pending.plan is not None
            return StepBatch(pending.plan, groups, pending.tally)
        rewards = [m.reward for g in groups for m in g.scored if m.reward is not None]
        version = min(pending.versions) if pending.versions else -1
        score = statistics.fmean(rewards) if rewards else None
        return ValidationResult(step, version, score, pending.tally)
