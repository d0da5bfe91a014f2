"""The maths of `bench learning` (jobrl_async.report.curves) on synthetic curves."""

from __future__ import annotations

import math

import pytest

from jobrl_async.report.curves import (
    Point,
    RunCurve,
    mean,
    mean_curve,
    mean_rewards,
    pooled_sd,
    schedule_figures,
    sd,
    summarise,
    time_to_target,
)


def run(schedule: str, seed: int, scores: list[float], *, step_s: float, rewards: list[float] | None = None) -> RunCurve:
    """A run whose round k (k steps done) is known at (k + 1) * step_s seconds; the last is the final."""
    points = tuple(Point(k, (k + 1) * step_s, s) for k, s in enumerate(scores))
    steps = len(scores) - 1
    return RunCurve(schedule, seed, points, tuple(rewards or [0.0] * steps), wall_s=steps * step_s + step_s, steps=steps)


def test_mean_and_sample_sd() -> None:
    assert mean([1.0, 2.0, 6.0]) == 3.0
    assert mean([]) is None
    assert sd([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == pytest.approx(math.sqrt(32 / 7))  # n - 1
    assert sd([3.0]) is None


def test_pooled_sd_weights_each_group_by_its_degrees_of_freedom() -> None:
    a, b = [1.0, 3.0], [2.0, 4.0, 6.0, 8.0]  # variances 2 (1 dof) and 20/3 (3 dof)
    assert pooled_sd(a, b) == pytest.approx(math.sqrt((1 * 2 + 3 * 20 / 3) / 4))
    assert pooled_sd([5.0, 5.0], [5.0, 5.0]) == 0.0
    assert pooled_sd([5.0], [6.0]) is None  # no degree of freedom
    assert pooled_sd([5.0], [1.0, 3.0]) == pytest.approx(math.sqrt(2.0))  # a single run adds no variance


def test_time_to_target_interpolates_between_rounds() -> None:
    curve = [(10.0, 1.0), (20.0, 2.0), (30.0, 4.0)]
    assert time_to_target(curve, 3.0) == pytest.approx(25.0)
    assert time_to_target(curve, 2.0) == 20.0  # reached exactly at a round
    assert time_to_target(curve, 0.5) == 10.0  # already there at the first round
    assert time_to_target(curve, 4.5) is None  # never reached
    # the first crossing counts, not a later one
    assert time_to_target([(1.0, 0.0), (2.0, 5.0), (3.0, 1.0), (4.0, 6.0)], 2.5) == pytest.approx(1.5)


def test_mean_curve_averages_rounds_with_the_same_steps_done() -> None:
    a = run("pipelined", 0, [1.0, 2.0, 3.0], step_s=10.0)
    b = run("pipelined", 1, [3.0, 4.0, 7.0], step_s=20.0)
    curve = mean_curve([a, b])
    assert [p.steps_done for p in curve] == [0, 1, 2]
    assert [p.mean for p in curve] == [2.0, 3.0, 5.0]
    assert [p.t_s for p in curve] == [15.0, 30.0, 45.0]
    assert curve[2].sd == pytest.approx(math.sqrt(8.0)) and curve[2].runs == 2
    # a round one run did not score: averaged over the runs that have it
    c = RunCurve("pipelined", 2, (Point(0, 5.0, 1.0), Point(2, 30.0, 9.0)), (0.0, 0.0), 30.0, 2)
    assert [(p.steps_done, p.runs) for p in mean_curve([a, c])] == [(0, 2), (1, 1), (2, 2)]


def test_schedule_figures() -> None:
    runs = [run("sequential", 0, [1.0, 2.0, 5.0], step_s=10.0, rewards=[1.0, 3.0]),
            run("sequential", 1, [2.0, 3.0, 7.0], step_s=20.0, rewards=[2.0, 4.0])]
    f = schedule_figures(runs)
    assert f["validation_first_mean"] == 1.5 and f["validation_final_mean"] == 6.0
    assert f["validation_final_sd"] == pytest.approx(math.sqrt(2.0), abs=1e-4)
    assert f["reward_last5_mean"] == 2.5
    assert f["wall_s_mean"] == 45.0  # 30 s and 60 s
    assert f["s_per_step_mean"] == 22.5  # 15 s and 30 s a step over 2 steps


def test_reward_last5_takes_only_the_last_five_steps() -> None:
    r = run("sequential", 0, [0.0] * 8, step_s=1.0, rewards=[100.0, 100.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert r.reward_last == 3.0


def test_summary_compares_each_schedule_with_the_sequential_one() -> None:
    seq = [run("sequential", s, [1.0, 3.0, f], step_s=20.0) for s, f in ((0, 5.0), (1, 7.0))]
    pip = [run("pipelined", s, [1.0, 4.0, f], step_s=10.0) for s, f in ((0, 6.0), (1, 8.0))]
    lag2 = [run("pipelined-lag2", s, [1.0, 2.0, 3.0], step_s=8.0) for s in (0, 1)]
    out = summarise({"sequential": seq, "pipelined": pip, "pipelined-lag2": lag2}, steps=2, seeds=2,
                    judge_latency_ms=300.0)
    assert (out["steps"], out["seeds"], out["judge_latency_ms"]) == (2, 2, 300.0)
    assert out["speedup_wall"] == 2.0  # 60 s against 30 s
    assert out["final_gap_in_sd"] == pytest.approx(1 / math.sqrt(2), abs=1e-3)  # +1 over a pooled sd of sqrt(2)
    assert out["pipelined-lag2"]["speedup_wall"] == 2.5
    assert out["pipelined-lag2"]["final_gap_in_sd"] < 0
    ttt = out["time_to_sequential_final_s"]
    # target 6.0: sequential's mean curve 1 -> 3 -> 6 at 20, 40, 60 s; pipelined 1 -> 4 -> 7 at 10, 20, 30 s
    assert ttt["sequential"] == 60.0
    assert ttt["pipelined"] == pytest.approx(20 + 10 * (6 - 4) / (7 - 4), abs=0.01)
    assert ttt["pipelined-lag2"] is None  # never reaches 6
    for schedule in ("sequential", "pipelined", "pipelined-lag2"):
        assert set(out[schedule]) >= {"validation_first_mean", "validation_final_mean", "validation_final_sd",
                                      "reward_last5_mean", "wall_s_mean", "s_per_step_mean"}


def test_summary_needs_the_sequential_baseline() -> None:
    with pytest.raises(ValueError, match="sequential"):
        summarise({"pipelined": [run("pipelined", 0, [1.0, 2.0], step_s=1.0)]}, steps=1, seeds=1,
                  judge_latency_ms=0.0)


def test_a_run_without_a_final_round_is_refused() -> None:
    with pytest.raises(ValueError, match="final"):
        RunCurve("sequential", 0, (Point(0, 1.0, 2.0),), (), 1.0, 1)


def test_mean_rewards_step_by_step() -> None:
    a = run("sequential", 0, [0.0, 0.0, 0.0], step_s=1.0, rewards=[1.0, 3.0])
    b = run("sequential", 1, [0.0, 0.0, 0.0], step_s=1.0, rewards=[3.0, 7.0])
    assert mean_rewards([a, b]) == [(1, 2.0, pytest.approx(math.sqrt(2.0))), (2, 5.0, pytest.approx(math.sqrt(8.0)))]
    assert mean_rewards([a]) == [(1, 1.0, None), (2, 3.0, None)]
