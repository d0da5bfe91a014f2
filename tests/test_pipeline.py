"""The pipeline on the real tiny model and the stub judge: flow control, accounting, failures."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch

from jobrl_async.config import Config, load_config
from jobrl_async.flow.records import ScoredTrajectory, Trajectory
from jobrl_async.ops import log
from jobrl_async.pipeline import build
from jobrl_async.pipeline import Pipeline

pytestmark = pytest.mark.slow

BATCH_CONTEXTS, ATTEMPTS = 2, 4


def small_config(checkpoints: Path, **overrides: Any) -> Config:
    values = {
        "model.name": "tiny",
        "judge.mode": "stub",
        "training.batch_contexts": BATCH_CONTEXTS,
        "training.attempts": ATTEMPTS,
        "training.learning_rate": 1e-3,
        "validation.max_contexts": 2,
        "validation.attempts": 2,
        "generation.max_new_tokens": 96,
        "checkpoints.uri": str(checkpoints),
        "checkpoints.latest_every_steps": 2,
        "pipeline.max_steps": 3,
        "pipeline.resume": False,
        "judge.max_concurrency": 8,
        "judge.rpm": 60_000,  # the limiter is not what these tests are about
        "judge.tpm": 100_000_000,
    }
    values.update(overrides)
    return load_config(env={}, overrides=values)


@pytest.fixture
def events() -> list[dict]:
    """Capture the JSON log stream of an in-process run."""
    buf = io.BytesIO()
    log.configure("json", "info", stream=buf)

    class Events(list):
        def refresh(self) -> "Events":
            self[:] = [orjson.loads(line) for line in buf.getvalue().splitlines()]
            return self

    return Events()


async def make_pipeline(cfg: Config, tmp: Path, stop: asyncio.Event | None = None) -> Pipeline:
    parts, progress, total = await build(cfg, tmp / "work")
    return Pipeline(parts, progress, stop or asyncio.Event(), total)


class CountingGenerator:
    """Wraps the real generator to see how far generation runs ahead of the learner."""

    def __init__(self, inner: Any, pipeline_ref: dict) -> None:
        self.inner = inner
        self.ref = pipeline_ref
        self.generated_train = 0
        self.max_lead = 0

    async def stream(self, requests: list) -> AsyncIterator[Trajectory]:
        async for t in self.inner.stream(requests):
            self.generated_train += t.split == "train"
            learned = self.ref["learned"] * BATCH_CONTEXTS * ATTEMPTS
            self.max_lead = max(self.max_lead, self.generated_train - learned)
            yield t

    async def load_weights(self, *args: Any) -> None:
        await self.inner.load_weights(*args)


async def test_slow_judge_bounds_the_generator_lead(tmp_path: Path, events: list) -> None:
    cfg = small_config(tmp_path / "ckpt", **{"judge.stub_latency_ms": 40.0, "judge.max_concurrency": 2,
                                            "pipeline.max_steps": 4, "validation.every_steps": 0})
    pipeline = await make_pipeline(cfg, tmp_path)
    ref = {"learned": 0}
    counting = CountingGenerator(pipeline.parts.generator, ref)
    pipeline.parts.generator = counting
    step = pipeline.parts.learner.step

    async def counted_step(groups: Any) -> Any:
        metrics = await step(groups)
        ref["learned"] += 1
        return metrics

    pipeline.parts.learner.step = counted_step  # type: ignore[method-assign]
    summary = await pipeline.run()
    batch = BATCH_CONTEXTS * ATTEMPTS
    assert summary.steps == 4
    # (max_policy_lag + 1) x batch: the generator never ran further ahead than the learner allows
    assert batch < counting.max_lead <= (cfg.training.max_policy_lag + 1) * batch
    steps = [e for e in events.refresh() if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    assert max(e["policy_lag"] for e in steps) == 1  # step k+1 was sampled before step k was learned


async def test_every_trajectory_is_accounted_for(tmp_path: Path, events: list) -> None:
    cfg = small_config(tmp_path / "ckpt")
    pipeline = await make_pipeline(cfg, tmp_path)
    judge = pipeline.parts.judge
    score = judge.score_trajectory
    calls = {"n": 0}

    async def flaky(t: Trajectory) -> ScoredTrajectory:
        calls["n"] += 1
        if calls["n"] % 5 == 0:
            return ScoredTrajectory(t, "judge_failed", reason="injected outage")
        return await score(t)

    judge.score_trajectory = flaky  # type: ignore[method-assign]
    summary = await pipeline.run()
    per_step = BATCH_CONTEXTS * ATTEMPTS + 2 * 2  # training + validation
    assert summary.tally.total == 3 * per_step
    assert summary.tally.judge_failed == calls["n"] // 5
    assert summary.tally.dropped == 0
    steps = [e for e in events.refresh() if e["event"] == "step"]
    assert sum(e["trajectories"]["judge_failed"] for e in steps) <= summary.tally.judge_failed
    assert all(e["trajectories"]["scored"] + e["trajectories"]["judge_failed"] == BATCH_CONTEXTS * ATTEMPTS
               for e in steps)


def count_planned_work(pipeline: Pipeline) -> dict[str, int]:
    """Count every trajectory the pipeline plans (training and validation), as it plans it."""
    planned = {"n": 0}
    for name in ("plan_training", "plan_validation"):
        make = getattr(pipeline, name)

        def counting(*args: Any, _make: Any = make) -> Any:
            work = _make(*args)
            planned["n"] += work.trajectories
            return work

        setattr(pipeline, name, counting)
    return planned


async def test_a_crashing_stage_still_writes_a_final_latest_and_a_summary_that_adds_up(
    tmp_path: Path, events: list
) -> None:
    # latest only at shutdown: the one on disk can only come from the wind-down after the crash
    cfg = small_config(tmp_path / "ckpt", **{"pipeline.max_steps": 10, "checkpoints.latest_every_steps": 0})
    pipeline = await make_pipeline(cfg, tmp_path)
    planned = count_planned_work(pipeline)
    calls = {"n": 0}
    score = pipeline.parts.judge.score_trajectory

    async def crash(t: Trajectory) -> ScoredTrajectory:
        calls["n"] += 1
        if calls["n"] == 40:  # in step 3 or 4: at least one step learned by then
            raise RuntimeError("judge stage bug")
        return await score(t)

    pipeline.parts.judge.score_trajectory = crash  # type: ignore[method-assign]
    with pytest.raises(BaseExceptionGroup) as e:
        await asyncio.wait_for(pipeline.run(), timeout=120)
    assert e.group_contains(RuntimeError, match="judge stage bug")
    assert not pipeline.parts.device.locked  # no device job left running
    last = pipeline.progress.last_step
    assert last >= 1
    latest = orjson.loads((tmp_path / "ckpt" / "latest.json").read_bytes())
    assert latest["step"] == last
    evs = events.refresh()
    assert any(e["event"] == "checkpoint_saved" and e["kind"] == "best" for e in evs)
    assert (tmp_path / "ckpt" / "best.json").exists()  # a pending best was not lost either
    summary = pipeline.summary
    assert summary.wall_s > 1.0
    assert summary.tally.total == planned["n"] > 0  # every planned trajectory is accounted for


async def test_best_is_written_only_when_validation_improves(tmp_path: Path, events: list) -> None:
    cfg = small_config(tmp_path / "ckpt", **{"pipeline.max_steps": 4})
    pipeline = await make_pipeline(cfg, tmp_path)
    summary = await pipeline.run()
    evs = events.refresh()
    scores = [e["validation_score"] for e in evs if e["event"] == "step"]
    assert len(scores) == 4
    improvements, best = [], None
    for i, s in enumerate(scores, start=1):
        if s is not None and (best is None or s > best):
            improvements.append(i)
            best = s
    saved_best = [e["step"] for e in evs if e["event"] == "checkpoint_saved" and e["kind"] == "best"]
    assert len(saved_best) == len(improvements)  # one best per improvement, none otherwise
    # a best is saved under the step its weights had learned: validation of step k samples the
    # policy of step k-1, of k-2 (one step of lag), or of step k when the learner finished step k
    # before the round's sampling began (its offers stream to the judge while it is sampled)
    assert all(k - 2 <= s <= k for k, s in zip(improvements, saved_best)), (improvements, saved_best)
    assert summary.best_score == best
    assert any(e["event"] == "checkpoint_saved" and e["kind"] == "latest" for e in evs)
    assert (tmp_path / "ckpt" / "best.json").exists() and (tmp_path / "ckpt" / "latest.json").exists()


async def test_sequential_schedule_runs_the_same_steps(tmp_path: Path, events: list) -> None:
    cfg = small_config(tmp_path / "ckpt", **{"pipeline.schedule": "sequential", "pipeline.max_steps": 2})
    pipeline = await make_pipeline(cfg, tmp_path)
    summary = await pipeline.run_sequential()
    steps = [e for e in events.refresh() if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2]
    assert all(e["policy_lag"] == 0 for e in steps)  # the seed's loop never samples ahead
    assert summary.tally.total == 2 * (BATCH_CONTEXTS * ATTEMPTS + 4)


async def test_stop_abandons_within_the_grace_and_saves_latest(tmp_path: Path, events: list) -> None:
    cfg = small_config(tmp_path / "ckpt", **{"pipeline.max_steps": 50, "pipeline.shutdown_grace_s": 0.5,
                                            "judge.stub_latency_ms": 30.0, "judge.max_concurrency": 2})
    stop = asyncio.Event()
    pipeline = await make_pipeline(cfg, tmp_path, stop)
    learned = asyncio.Event()
    step = pipeline.parts.learner.step

    async def signal_after_first(groups: Any) -> Any:
        metrics = await step(groups)
        learned.set()
        return metrics

    pipeline.parts.learner.step = signal_after_first  # type: ignore[method-assign]
    run = asyncio.create_task(pipeline.run())
    await asyncio.wait_for(learned.wait(), 120)
    stop.set()
    summary = await asyncio.wait_for(run, 120)
    assert 1 <= summary.steps < 50
    assert summary.tally.dropped > 0  # in-flight work was abandoned, and counted
    evs = events.refresh()
    latest = [e for e in evs if e["event"] == "checkpoint_saved" and e["kind"] == "latest"]
    assert latest and latest[-1]["step"] == pipeline.progress.last_step


async def test_a_mostly_failed_validation_round_never_decides_best(tmp_path: Path, events: list) -> None:
    cfg = small_config(tmp_path / "ckpt", **{"pipeline.max_steps": 2})
    pipeline = await make_pipeline(cfg, tmp_path)
    score = pipeline.parts.judge.score_trajectory

    async def validation_outage(t: Trajectory) -> ScoredTrajectory:
        if t.split == "validation" and t.attempt > 0:  # half of every round fails
            return ScoredTrajectory(t, "judge_failed", reason="injected outage")
        return await score(t)

    pipeline.parts.judge.score_trajectory = validation_outage  # type: ignore[method-assign]
    summary = await pipeline.run()
    evs = events.refresh()
    assert summary.best_score is None
    assert not [e for e in evs if e["event"] == "checkpoint_saved" and e["kind"] == "best"]
    assert [e["step"] for e in evs if e["event"] == "validation_not_trusted"] == [1, 2]
    assert all(e["validation_judge_failed_share"] == 0.5 for e in evs if e["event"] == "step")


async def test_steps_are_learned_in_order_even_when_judged_out_of_order(tmp_path: Path, events: list) -> None:
    cfg = small_config(tmp_path / "ckpt", **{"pipeline.max_steps": 4, "validation.every_steps": 0})
    pipeline = await make_pipeline(cfg, tmp_path)
    score = pipeline.parts.judge.score_trajectory
    per_step = BATCH_CONTEXTS * ATTEMPTS
    judged = {2: 0, 3: 0}
    completed: list[int] = []  # steps in the order their last trajectory was judged
    step_three_judged = asyncio.Event()

    async def hold_step_two(t: Trajectory) -> ScoredTrajectory:
        if t.step == 2 and t.group == 0 and t.attempt == 0:
            await asyncio.wait_for(step_three_judged.wait(), 60)  # step 3 is fully judged first
        scored = await score(t)
        if t.step in judged:
            judged[t.step] += 1
            if judged[t.step] == per_step:
                completed.append(t.step)
                if t.step == 3:
                    step_three_judged.set()
        return scored

    learned: list[int] = []
    step = pipeline.parts.learner.step

    async def record(groups: Any) -> Any:
        learned.append(groups[0].step)
        return await step(groups)

    pipeline.parts.judge.score_trajectory = hold_step_two  # type: ignore[method-assign]
    pipeline.parts.learner.step = record  # type: ignore[method-assign]
    await pipeline.run()
    assert completed == [3, 2]  # judged out of order...
    assert learned == [1, 2, 3, 4]  # ...learned in order
    steps = [e for e in events.refresh() if e["event"] == "step"]
    assert max(e["policy_lag"] for e in steps) <= cfg.training.max_policy_lag


async def test_a_batch_queued_at_shutdown_is_not_learned_after_the_last_recorded_step(
    tmp_path: Path, events: list
) -> None:
    """The learner is busy with step 2 and step 3 waits in its queue when the stop comes: the
    final `latest` must hold step 2's weights with step 2's progress, not step 3's weights."""
    from jobrl_async.checkpoints import load_checkpoint
    from jobrl_async.policy.model import adapter_state

    cfg = small_config(tmp_path / "ckpt", **{"pipeline.max_steps": 6, "pipeline.shutdown_grace_s": 0.0,
                                            "validation.every_steps": 0, "checkpoints.latest_every_steps": 0})
    stop = asyncio.Event()
    pipeline = await make_pipeline(cfg, tmp_path, stop)
    weights_after: dict[int, dict] = {}
    step = pipeline.parts.learner.step

    async def slow_at_two(groups: Any) -> Any:
        if groups[0].step == 2:  # hold step 2 until step 3 is judged and queued, then stop
            while pipeline.learn_q.empty():
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.sleep(0.05)  # the run starts its shutdown while this step is in progress
        metrics = await step(groups)
        weights_after[groups[0].step] = adapter_state(pipeline.parts.policy)
        return metrics

    pipeline.parts.learner.step = slow_at_two  # type: ignore[method-assign]
    summary = await asyncio.wait_for(pipeline.run(), 120)
    assert pipeline.progress.last_step == 2 and summary.steps == 2
    assert 3 not in weights_after  # the queued step was left unlearned (the grace had no room)...
    learning = pipeline.collector.learning  # ...and its judged trajectories are counted as such
    per_step = BATCH_CONTEXTS * ATTEMPTS
    assert learning.learned == 2 * per_step
    assert learning.unlearned >= per_step  # step 3 at least (step 4 may be partly judged too)
    assert learning.judged == learning.learned + learning.unlearned
    unlearned = [e for e in events.refresh() if e["event"] == "judged_trajectories_unlearned"]
    assert sum(e["n"] for e in unlearned) == learning.unlearned
    assert unlearned[0]["by_step"]["train:3"] == per_step
    saved = await load_checkpoint(str(tmp_path / "ckpt"), cfg, tmp_path / "loaded")
    assert saved.trainer.step == 2
    assert saved.trainer.policy_version == pipeline.parts.policy.version == 2
    for name, tensor in weights_after[2].items():
        assert torch.equal(saved.adapter[name], tensor), name


async def test_by_default_every_step_leaves_a_latest(tmp_path: Path, events: list) -> None:
    """A crash loses at most one step of paid judge work: `latest` after every step by default."""
    cfg = small_config(tmp_path / "ckpt", **{"validation.every_steps": 0})
    cfg.checkpoints.latest_every_steps = load_config(env={}).checkpoints.latest_every_steps  # the default
    pipeline = await make_pipeline(cfg, tmp_path)
    await pipeline.run()
    saved = [e["step"] for e in events.refresh() if e["event"] == "checkpoint_saved" and e["kind"] == "latest"]
    assert saved == [1, 2, 3]


async def test_offers_flagged_for_injection_are_counted_per_step(tmp_path: Path, events: list) -> None:
    from dataclasses import replace

    cfg = small_config(tmp_path / "ckpt", **{"pipeline.max_steps": 2, "validation.every_steps": 0})
    pipeline = await make_pipeline(cfg, tmp_path)
    score = pipeline.parts.judge.score_trajectory

    async def flag_first_attempts(t: Trajectory) -> ScoredTrajectory:
        scored = await score(t)
        if t.attempt == 0 and scored.verdict is not None:  # one offer per group "talks to the judge"
            return replace(scored, verdict=replace(scored.verdict, flags=("addresses_evaluator", "score_request")))
        return scored

    pipeline.parts.judge.score_trajectory = flag_first_attempts  # type: ignore[method-assign]
    await pipeline.run()
    steps = [e for e in events.refresh() if e["event"] == "step"]
    assert [e["injection_flagged"] for e in steps] == [BATCH_CONTEXTS, BATCH_CONTEXTS]
    assert all(e["injection_flags"] == {"addresses_evaluator": BATCH_CONTEXTS, "score_request": BATCH_CONTEXTS}
               for e in steps)



async def test_a_generator_stage_cancelled_mid_stream_stops_its_sampler_at_once(tmp_path: Path) -> None:
    """The stage waits on a full judge queue with a validation round's sampler (which holds the
    policy lock) still running: cancelled there, the sampler stops before the stage is done, not
    whenever the garbage collector gets to the stream."""
    from types import SimpleNamespace

    from jobrl_async.aio import run_ahead

    cfg = small_config(tmp_path / "ckpt", **{"pipeline.judge_queue": 1})
    pipeline = await make_pipeline(cfg, tmp_path)
    sampler_stopped = asyncio.Event()

    async def sample(emit: Any) -> None:
        async with pipeline.policy_lock:
            try:
                for i in range(3):
                    emit(i)
                await asyncio.Event().wait()  # more to sample
            finally:
                sampler_stopped.set()

    pipeline.stream = lambda work: run_ahead(sample)  # type: ignore[method-assign]
    await pipeline.gen_q.put(SimpleNamespace(split="validation", step=1, trajectories=3))  # type: ignore[arg-type]
    stage = asyncio.create_task(pipeline._generate())
    while pipeline.judge_q.qsize() < 1 or not pipeline.policy_lock.locked():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the stage now waits on the full judge queue, inside its loop
    stage.cancel()
    await asyncio.gather(stage, return_exceptions=True)
    assert sampler_stopped.is_set() and not pipeline.policy_lock.locked()
