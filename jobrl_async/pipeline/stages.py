"""The pipeline: six stages in one asyncio process, bounded queues, one place for the overlap.

    producer ─gen_q─▶ generator ─judge_q─▶ judge ×N ─scored_q─▶ collector ─learn_q─▶ learner
                      (device)              (rate limited)        (groups,          (device)
                                                                  validation)          │
                                                                       │ best          │ latest
                                                                       └──▶ checkpoint writer ◀┘

Every arrow is a bounded asyncio.Queue: a full queue blocks its producer, nothing is dropped
silently. The overlap lives in one place, the staleness gate in `_produce`: step k+1 may be
sampled while step k is still judged or learned, never more than `max_policy_lag + 1` steps ahead
of the learner. Generation and learning share the device lock (one job at a time, in a worker
thread); judge and storage I/O never wait on it. Each helper has its own module (see __init__).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing

from ..aio import finish_then_cancel, run_ahead
from ..collector import Collector, StepBatch, ValidationResult
from ..flow.records import ScoredTrajectory, StepPlan, Trajectory
from ..generation.generator import in_request_order
from ..judge.stage import judge_workers
from ..learning.learner import StepMetrics
from ..learning.staleness import StalenessGate
from ..ops.log import get_logger
from ..ops.meters import BusyMeter
from ..policy.device import device_user
from ..policy.model import adapter_state
from .assemble import Parts, Progress
from .publish import publish_weights
from .reporting import GenerationTiming, Observers, StepReporter, Summary
from .saves import Saves
from .sequential import sequential_steps
from .shutdown import Grace, leave_unlearned, until_done_or_stopped, with_wind_down
from .validation import Snapshot, ValidationRounds
from .work import Work, steps_to_run, training_work, validation_contexts, validation_due, validation_work

log = get_logger("pipeline")


class Pipeline:
    def __init__(self, parts: Parts, progress: Progress, stop: asyncio.Event, total_steps: int,
                 observers: Observers | None = None) -> None:
        self.parts, self.cfg = parts, parts.cfg
        self.progress, self.stop, self.total_steps = progress, stop, total_steps
        batch = self.cfg.training.batch_contexts * self.cfg.training.attempts
        lag = self.cfg.training.max_policy_lag
        self.gate = StalenessGate(lag)
        self.gen_q: asyncio.Queue[Work] = asyncio.Queue(maxsize=2 * (lag + 1))
        self.judge_q: asyncio.Queue[Trajectory] = asyncio.Queue(maxsize=self.cfg.pipeline.judge_queue or batch)
        self.scored_q: asyncio.Queue[ScoredTrajectory] = asyncio.Queue(maxsize=batch)
        self.learn_q: asyncio.Queue[StepBatch | None] = asyncio.Queue(maxsize=lag + 1)  # None: the end
        self.collector = Collector()
        self.judge_busy = BusyMeter()
        self.observers = observers or Observers()
        self.report = StepReporter(parts, progress, self.judge_busy, self.queue_depths, self.observers)
        self.validation = ValidationRounds(self.cfg.validation, progress)
        self.saves = Saves(parts, progress, total_steps)
        self.policy_lock = asyncio.Lock()  # weights and progress move together; a snapshot sees one policy
        self.ready: dict[int, StepBatch] = {}  # judged steps waiting for the ones before them
        self.next_to_learn = progress.next_step
        self.learned_here = 0  # steps learned by this process (no final `latest` without one)
        self.learner_failed = False
        self.stopping = False  # set once the stages wind down: no new sampling or judging
        self.grace = Grace()  # from a stop: how long the steps in flight may still take
        self.learn_s = 0.0  # how long the last learner step took (for the grace)
        self.producer_done = False
        self.drained = asyncio.Event()

    @property
    def summary(self) -> Summary:
        return self.report.summary

    # ------------------------------------------------------------------ the run

    async def run(self) -> Summary:
        """Start every stage, wait until the work is done (or a stop), then shut down cleanly."""
        return await with_wind_down(self, self._run_stages)

    async def run_sequential(self) -> Summary:
        """The seed's loop, kept as the baseline (sequential.py)."""
        return await with_wind_down(self, lambda: sequential_steps(self))

    async def _run_stages(self) -> None:
        await publish_weights(self.parts, at_start=True)  # a resumed run's servers sample from its adapter
        async with asyncio.TaskGroup() as tg:
            stages = [
                tg.create_task(self._produce(), name="producer"),
                tg.create_task(self._generate(), name="generator"),
                *(tg.create_task(self._judge(), name="judge") for _ in range(judge_workers(self.cfg.judge))),
                tg.create_task(self._collect(), name="collector"),
                tg.create_task(self._learn(), name="learner"),
            ]
            await until_done_or_stopped(self)
            self.stopping = True  # nothing new is sampled or judged from here on
            *others, learner = stages
            for task in others:
                task.cancel()
            await asyncio.wait(others)
            # the learner takes what is queued (as the grace allows), then this end-of-queue mark
            await self.learn_q.put(None)
            await learner

    # ------------------------------------------------------------------ stages

    async def _produce(self) -> None:
        for plan in self.plans():
            if self.stop.is_set():
                break
            await self.gate.acquire()  # <- the overlap: at most max_policy_lag + 1 steps ahead
            if self.stop.is_set():
                await self.gate.finish()
                break
            await self.gen_q.put(self.plan_training(plan))
            if self.validation_due(plan.step):
                await self.gen_q.put(self.plan_validation(plan.step))
        self.producer_done = True
        self._check_drained()

    async def _generate(self) -> None:
        device_user.set("generator")
        while True:
            work = await self.gen_q.get()
            if self.stop.is_set():  # stopping: do not start new samples
                self.route(self.collector.drop(work.split, work.step, work.trajectories))
                log.info("trajectories_dropped", split=work.split, step=work.step, n=work.trajectories, reason="shutdown")
                continue
            timing = GenerationTiming()
            async with aclosing(self.stream(work)) as offers:  # a stop here stops its sampling at once
                async for t in offers:  # each offer goes to the judge as soon as it ends
                    timing.offer_ready()
                    await self.judge_q.put(t)  # blocks while the judge is behind: backpressure
            if work.split == "train":
                self.report.generated(work.step, timing)

    async def _judge(self) -> None:
        while True:
            t = await self.judge_q.get()
            with self.judge_busy.busy():
                scored = await self.parts.judge.score_trajectory(t)
            await self.scored_q.put(scored)

    async def _collect(self) -> None:
        while True:
            self.route(self.collector.add(await self.scored_q.get()))
            if self.observers.metrics:
                self.observers.metrics.heartbeat()

    async def _learn(self) -> None:
        device_user.set("learner")
        while (batch := await self.learn_q.get()) is not None:
            if self.stopping and not self.grace.fits(self.learn_s):
                leave_unlearned(self, [batch], reason="no time left in the shutdown grace")
                continue
            started = time.monotonic()
            await self.learn_one(batch)
            self.learn_s = time.monotonic() - started
            self._check_drained()

    # ------------------------------------------------------------------ what the stages do

    def plans(self) -> Iterator[StepPlan]:
        return steps_to_run(self.cfg, self.parts.train, self.progress.next_step, self.total_steps)

    def validation_due(self, step: int) -> bool:
        return validation_due(self.cfg, bool(self.parts.validation), step)

    def plan_training(self, plan: StepPlan) -> Work:
        self.collector.expect_training(plan, self.cfg.training.attempts)
        self.report.planned(plan.step, wants_validation=self.validation_due(plan.step))
        return training_work(plan, self.cfg.training.attempts)

    def plan_validation(self, step: int) -> Work:
        contexts = validation_contexts(self.cfg, self.parts.validation)
        self.collector.expect_validation(step, contexts, self.cfg.validation.attempts)
        return validation_work(self.cfg, contexts, step)

    def stream(self, work: Work) -> AsyncGenerator[Trajectory, None]:
        """A work's trajectories as they are sampled; a validation round samples under the policy
        lock (the saved `best` must be exactly the validated adapter), which it holds only while
        it samples, not while the judge's queue is full."""
        if work.split == "train":
            return self.parts.generator.stream(list(work.requests))
        return run_ahead(lambda emit: self._validation_round(work, emit))

    async def _validation_round(self, work: Work, emit: Callable[[Trajectory], None]) -> None:
        async with self.policy_lock:
            weights = await self.parts.device.run(adapter_state, self.parts.policy)
            self.validation.sampled(work.step, Snapshot(weights, self.saves.trainer_state()))
            async with aclosing(self.parts.generator.stream(list(work.requests))) as offers:
                async for t in offers:
                    emit(t)

    async def sample(self, work: Work) -> list[Trajectory]:
        return await in_request_order(self.stream(work), work.requests)

    def route(self, done: StepBatch | ValidationResult | None) -> None:
        if isinstance(done, StepBatch):
            # In step order: a step judged early waits for the one before it, so progress and
            # checkpoints always describe a prefix of the run and the lag bound holds.
            self.ready[done.step] = done
            while self.next_to_learn in self.ready:
                self.learn_q.put_nowait(self.ready.pop(self.next_to_learn))  # the gate bounds it
                self.next_to_learn += 1
        elif isinstance(done, ValidationResult):
            chosen = self.validation.new_best(done)
            if chosen is not None:  # saved under the step its weights had learned
                self.saves.best(chosen, validation_round=done.step)
            self.report.validated(done)
            self.report.emit_ready()
            self._check_drained()

    async def learn_one(self, batch: StepBatch) -> None:
        if batch.tally.dropped == batch.tally.total:  # abandoned at shutdown: not learned, not done
            self.report.dropped(batch.step)
        else:
            # Once started, a step is learned AND recorded, even if the run is cancelled
            # meanwhile: new weights never exist without the progress that goes with them.
            metrics = await finish_then_cancel(self._learn_and_record(batch))
            self.collector.learning.learned += batch.judged
            if metrics.stepped:
                await publish_weights(self.parts)  # before the gate lets the next step be sampled
        await self.gate.finish()

    async def _learn_and_record(self, batch: StepBatch) -> StepMetrics:
        async with self.policy_lock:
            try:
                metrics = await self.parts.learner.step(batch.groups)
            except BaseException:
                self.learner_failed = True  # the weights may be half-updated: no final latest
                raise
            plan, pr = batch.plan, self.progress
            pr.last_step, pr.last_epoch, pr.last_position = plan.step, plan.epoch, plan.position
            self.learned_here += 1
            self.report.learned(batch, metrics)
            if self.saves.latest_due(batch.step):
                await self.saves.latest()
        self.report.emit_ready()
        return metrics

    def queue_depths(self) -> dict[str, int]:
        return {"generator": self.gen_q.qsize(), "judge": self.judge_q.qsize(),
                "collector": self.scored_q.qsize(), "learner": self.learn_q.qsize()}

    def _check_drained(self) -> None:
        if self.producer_done and self.gate.in_flight == 0 and not self.collector.pending_steps and not self.report.waiting:
            self.drained.set()
