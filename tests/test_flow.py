"""Pure flow control: the step plan, the staleness gate and the reward collector."""

from __future__ import annotations

import asyncio

import pytest

from jobrl_async.collector import Collector, StepBatch, ValidationResult
from jobrl_async.flow.records import Context, CriterionVerdict, CRITERIA, ScoredTrajectory, StepPlan, Trajectory, Verdict
from jobrl_async.learning.staleness import StalenessGate
from jobrl_async.producer import plan_steps, steps_per_epoch, total_steps


def ctxs(n: int) -> list[Context]:
    return [Context(f"job {i}", "en", ("a",), None, i) for i in range(n)]


# ---------------------------------------------------------------- producer


def test_seed_shape_48_steps_per_epoch() -> None:
    assert steps_per_epoch(481, 10) == 48
    assert total_steps(481, 10, epochs=3) == 144
    assert total_steps(481, 10, epochs=3, max_steps=5) == 5


def test_plan_is_seeded_and_covers_each_epoch_once() -> None:
    train = ctxs(25)
    plan = list(plan_steps(train, seed=1, batch_contexts=10, epochs=2))
    assert [p.step for p in plan] == [1, 2, 3, 4]
    assert [(p.epoch, p.position) for p in plan] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    epoch0 = [c.index for p in plan[:2] for c in p.contexts]
    assert len(set(epoch0)) == 20  # no context twice within an epoch
    assert plan == list(plan_steps(list(reversed(train)), seed=1, batch_contexts=10, epochs=2))
    assert plan != list(plan_steps(train, seed=2, batch_contexts=10, epochs=2))
    assert [c.index for c in plan[0].contexts] != [c.index for c in plan[2].contexts]  # reshuffled


def test_resume_continues_with_the_same_data() -> None:
    train = ctxs(30)
    full = list(plan_steps(train, seed=3, batch_contexts=10, epochs=3))
    resumed = list(plan_steps(train, seed=3, batch_contexts=10, epochs=3, start_step=5))
    assert resumed == full[4:]


def test_step_plan_validates() -> None:
    with pytest.raises(ValueError):
        StepPlan(0, 0, 0, tuple(ctxs(1)))


# ---------------------------------------------------------------- staleness gate


async def test_gate_bounds_the_lead_to_lag_plus_one() -> None:
    gate = StalenessGate(max_policy_lag=1)
    await gate.acquire()
    await gate.acquire()
    third = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0.01)
    assert not third.done() and gate.in_flight == 2
    await gate.finish()
    await asyncio.wait_for(third, 1)
    assert gate.in_flight == 2 and gate.released == 3


async def test_gate_lag_zero_is_lockstep() -> None:
    gate = StalenessGate(0)
    await gate.acquire()
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0.01)
    assert not second.done()
    await gate.finish()
    await asyncio.wait_for(second, 1)


async def test_gate_finish_without_release_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        await StalenessGate(1).finish()


# ---------------------------------------------------------------- collector


def verdict(reward: float) -> Verdict:
    s = reward
    return Verdict({n: CriterionVerdict(n, "YES", s) for n in CRITERIA}, reward)


def traj(split: str, step: int, group: int, attempt: int, version: int = 0) -> Trajectory:
    return Trajectory(ctxs(1)[0], split, step, group, attempt, (1,), (2, 3), "x", (-0.1, -0.2), False, version)  # type: ignore[arg-type]


def scored(t: Trajectory, reward: float) -> ScoredTrajectory:
    return ScoredTrajectory(t, "scored", verdict(reward))


def test_training_step_completes_when_every_member_is_accounted() -> None:
    col = Collector()
    plan = StepPlan(1, 0, 0, tuple(ctxs(2)))
    col.expect_training(plan, attempts=2)
    assert col.add(scored(traj("train", 1, 0, 0), 5.0)) is None
    assert col.add(ScoredTrajectory(traj("train", 1, 0, 1), "judge_failed", reason="timeout")) is None
    assert col.add(scored(traj("train", 1, 1, 0), 7.0)) is None
    done = col.add(scored(traj("train", 1, 1, 1), 9.0))
    assert isinstance(done, StepBatch)
    assert [len(g.members) for g in done.groups] == [2, 2]
    assert [len(g.scored) for g in done.groups] == [1, 2]
    assert done.tally.as_dict() == {"scored": 3, "judge_failed": 1, "dropped": 0}
    assert sorted(done.rewards) == [5.0, 7.0, 9.0]


def test_validation_score_excludes_failures() -> None:
    col = Collector()
    col.expect_validation(2, ctxs(1), attempts=3)
    col.add(scored(traj("validation", 2, 0, 0, version=1), 6.0))
    col.add(ScoredTrajectory(traj("validation", 2, 0, 1, version=1), "judge_failed", reason="429"))
    done = col.add(scored(traj("validation", 2, 0, 2, version=1), 8.0))
    assert isinstance(done, ValidationResult)
    assert done.score == 7.0  # not (6 + 0 + 8) / 3
    assert done.judge_failed_share == pytest.approx(1 / 3)
    assert done.policy_version == 1


def test_validation_with_nothing_scored_has_no_score() -> None:
    col = Collector()
    col.expect_validation(1, ctxs(1), attempts=1)
    done = col.add(ScoredTrajectory(traj("validation", 1, 0, 0), "judge_failed", reason="outage"))
    assert isinstance(done, ValidationResult) and done.score is None


def test_abandon_counts_the_missing_as_dropped_and_totals_add_up() -> None:
    col = Collector()
    col.expect_training(StepPlan(1, 0, 0, tuple(ctxs(2))), attempts=2)
    col.expect_validation(1, ctxs(3), attempts=2)
    col.add(scored(traj("train", 1, 0, 0), 5.0))
    assert col.abandon_all() == {"train:1": 3, "validation:1": 6}
    assert col.tally.as_dict() == {"scored": 1, "judge_failed": 0, "dropped": 9}
    assert col.tally.total == 4 + 6


def test_drop_can_complete_a_step() -> None:
    col = Collector()
    col.expect_training(StepPlan(1, 0, 0, tuple(ctxs(1))), attempts=2)
    col.add(scored(traj("train", 1, 0, 0), 5.0))
    done = col.drop("train", 1, 1)
    assert isinstance(done, StepBatch) and done.tally.dropped == 1


def test_unexpected_trajectory_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        Collector().add(scored(traj("train", 9, 0, 0), 1.0))
