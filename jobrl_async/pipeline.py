"""The pipeline: six stages in one asyncio process, bounded queues, one place for the overlap.

    producer ─gen_q─▶ generator ─judge_q─▶ judge ×N ─scored_q─▶ collector ─learn_q─▶ learner
                      (device)              (5 criteria,          (groups,          (device)
                                             rate limited)         validation)         │
                                                                       │ best          │ latest
                                                                       └──▶ checkpoint writer ◀┘

Every arrow is a bounded asyncio.Queue: a full queue blocks its producer, nothing is dropped
silently. The overlap lives in one place, the staleness gate: the producer may release step
k+1 to the generator while step k is still being judged or learned, but never more than
`max_policy_lag + 1` steps ahead of the learner. Generation and learning share the device
lock (one job at a time, in a worker thread); judge and storage I/O never wait on it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any, Iterator

from .aio import finish_then_cancel
from .checkpoints import CheckpointWriter, SaveRequest, TrainerState, capture_rng, snapshot
from .collector import Collector, StepBatch, Tally, ValidationResult
from .config import Config
from .device import Device, device_user
from .generator import SampleRequest
from .judge.stage import Judge
from .learner import Learner, StepMetrics
from .log import get_logger
from .meters import BusyMeter, Window
from .model import Policy, adapter_state, save_adapter
from .producer import StepPlan, plan_steps
from .records import Context, ScoredTrajectory, Trajectory
from .staleness import StalenessGate

log = get_logger("pipeline")

STEP_HISTORY = 1_000  # steps whose timings the summary keeps

# Learner metrics repeated in the `step` event, so one event tells the whole story of a step.
LEARNER_FIELDS = ("loss", "grad_norm", "ratio_mean", "ratio_max", "clipped_fraction", "logprob_mismatch",
                  "tis_weight_mean", "tis_capped_fraction", "kl", "zero_variance_share", "tokens", "lr")


@dataclass(frozen=True)
class Work:
    """One generator job: a step's training batch or its validation round."""

    split: str  # train | validation
    step: int
    requests: tuple[SampleRequest, ...]

    @property
    def trajectories(self) -> int:
        return sum(r.attempts for r in self.requests)


@dataclass
class Parts:
    """The built stages a run wires together."""

    cfg: Config
    policy: Policy
    device: Device
    generator: Any  # a generator.Generator
    judge: Judge
    learner: Learner
    writer: CheckpointWriter | None
    train: list[Context]
    validation: list[Context]
    adapter_root: Path | None = None  # remote generation: where adapters are published


@dataclass
class Progress:
    """Where the run is: restored from a checkpoint on resume."""

    next_step: int = 1
    best_score: float | None = None
    last_step: int = 0  # the last step the learner finished
    last_epoch: int = 0
    last_position: int = -1


@dataclass(frozen=True)
class _Snapshot:
    """The adapter a validation round sampled from, with the trainer state those weights belong to."""

    weights: dict
    trainer: TrainerState


@dataclass
class _StepReport:
    metrics: StepMetrics | None = None
    batch: StepBatch | None = None
    validation: ValidationResult | None = None
    wants_validation: bool = False


@dataclass
class Summary:
    steps: int = 0
    tally: Tally = field(default_factory=Tally)
    best_score: float | None = None
    stopped_by: str | None = None
    wall_s: float = 0.0
    stage_busy_s: dict[str, float] = field(default_factory=dict)
    # the most recent steps' wall time and busy fractions per stage (for `bench pipeline`);
    # bounded, so a run of many epochs does not grow them without end
    step_times: deque[float] = field(default_factory=lambda: deque(maxlen=STEP_HISTORY))
    step_busy: deque[dict[str, float]] = field(default_factory=lambda: deque(maxlen=STEP_HISTORY))


class Pipeline:
    def __init__(self, parts: Parts, progress: Progress, stop: asyncio.Event, total_steps: int,
                 *, metrics: Any = None, progress_line: Any = None, tracker: Any = None) -> None:
        self.p = parts
        self.metrics = metrics  # metrics.RunMetrics (served when --metrics-port is set)
        self.progress_line = progress_line  # progress.ProgressLine (draws only on a terminal)
        self.tracker = tracker  # tracking.WandbSink, when W&B is on
        self.cfg = parts.cfg
        self.progress = progress
        self.stop = stop
        self.total_steps = total_steps
        attempts = self.cfg.training.attempts
        batch = self.cfg.training.batch_contexts * attempts
        lag = self.cfg.training.max_policy_lag
        self.gate = StalenessGate(lag)
        self.gen_q: asyncio.Queue[Work] = asyncio.Queue(maxsize=2 * (lag + 1))
        self.judge_q: asyncio.Queue[Trajectory] = asyncio.Queue(maxsize=self.cfg.pipeline.judge_queue or batch)
        self.scored_q: asyncio.Queue[ScoredTrajectory] = asyncio.Queue(maxsize=batch)
        self.learn_q: asyncio.Queue[StepBatch] = asyncio.Queue(maxsize=lag + 1)
        self.collector = Collector()
        self.reports: dict[int, _StepReport] = {}
        self.snapshots: dict[int, _Snapshot] = {}  # validation round (step) -> what it sampled from
        self.policy_lock = asyncio.Lock()  # a validation snapshot and its samples see one policy
        self.meters = {"judge": BusyMeter()}
        device = parts.device
        self.window = Window({"generator": _DeviceMeter(device, "generator"), **self.meters,
                              "learner": _DeviceMeter(device, "learner"), "device": _DeviceMeter(device)})
        self.producer_done = False
        self.ready: dict[int, StepBatch] = {}  # complete steps waiting for the ones before them
        self.next_to_learn = progress.next_step
        self.learned_here = 0  # steps learned by this process (no final `latest` without one)
        self.learner_failed = False
        self.stopping = False  # set once the stages wind down: the learner takes no new batch
        self.learner_idle = asyncio.Event()  # the learner waits for a batch (not mid-step)
        self.learner_idle.set()
        self.drained = asyncio.Event()
        self.summary = Summary(best_score=progress.best_score)
        self._judge_calls0 = 0
        self._t_last = time.perf_counter()

    # ------------------------------------------------------------------ the run

    async def run(self) -> Summary:
        """Start every stage, wait until the work is done (or a stop), then shut down cleanly."""
        return await self._with_wind_down(self._run_stages)

    async def run_sequential(self) -> Summary:
        """The seed's loop, kept as the baseline: generate all, judge all, learn, one after another."""

        async def steps() -> None:
            for plan in self._plans():
                if self.stop.is_set():
                    break
                await self._sequential_step(plan)

        return await self._with_wind_down(steps)

    async def _with_wind_down(self, body: Callable[[], Awaitable[None]]) -> Summary:
        """Run `body` beside the checkpoint writer, then keep what was paid for: a final
        `latest` and the pending uploads, also when a stage crashed. A forced stop (this task
        cancelled: a second signal) skips both, and a crashed writer ends the run."""
        t0 = time.perf_counter()
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self.p.writer.run(), name="checkpoints") if self.p.writer else None
                try:
                    await body()
                except asyncio.CancelledError:
                    raise
                except BaseException:
                    await self._wind_down(writer, crashed=True)
                    raise
                await self._wind_down(writer)
        finally:
            self._finish_summary(t0)
        return self.summary

    async def _run_stages(self) -> None:
        await self._publish_weights()  # a resumed run's servers must sample from its adapter
        n_judges = max(1, self.cfg.judge.max_concurrency)
        async with asyncio.TaskGroup() as tg:
            stages = [
                tg.create_task(self._produce(), name="producer"),
                tg.create_task(self._generate(), name="generator"),
                *(tg.create_task(self._judge(), name="judge") for _ in range(n_judges)),
                tg.create_task(self._collect(), name="collector"),
                tg.create_task(self._learn(), name="learner"),
            ]
            await self._until_done_or_stopped()
            self.stopping = True  # the learner takes no new batch from here on
            *others, learner = stages
            for task in others:
                task.cancel()
            # A step being learned finishes (one step at most): its weights and its progress
            # are recorded together, so the final `latest` never holds one without the other.
            await self.learner_idle.wait()
            learner.cancel()

    async def _wind_down(self, writer: asyncio.Task | None, crashed: bool = False) -> None:
        """Count what was left as dropped, write the final `latest`, let the uploads finish."""
        try:
            self._abandon_leftovers()
            await self._final_checkpoint()
        except Exception as exc:  # never hide the crash being reported; still let uploads finish
            if not crashed:
                raise
            log.error("wind_down_failed", error=f"{type(exc).__name__}: {exc}")
        if writer:
            await self.p.writer.close(timeout=max(self.cfg.pipeline.shutdown_grace_s, 60.0))

    def _finish_summary(self, t0: float) -> None:
        self.summary.wall_s = time.perf_counter() - t0
        self.summary.tally = self.collector.tally
        device = self.p.device
        self.summary.stage_busy_s = {"generator": round(device.busy_by["generator"], 3),
                                     "judge": round(self.meters["judge"].busy_s, 3),
                                     "learner": round(device.busy_by["learner"], 3)}

    async def _sequential_step(self, plan: StepPlan) -> None:
        await self.gate.acquire()
        works = [self._training_work(plan)]
        if self._validation_due(plan.step):
            works.append(self._validation_work(plan.step))
        trajectories: list[Trajectory] = []
        device_user.set("generator")
        for work in works:
            trajectories += await self._sample(work)
        with self.meters["judge"].busy():
            results = await score_all(self.p.judge, trajectories, self.cfg.judge.max_concurrency)
        for scored in results:
            self._route(self.collector.add(scored))
        device_user.set("learner")  # a judged step is learned, even when a stop came meanwhile
        await self._learn_one(self.learn_q.get_nowait())
        self._emit_ready_steps()

    async def _until_done_or_stopped(self) -> None:
        done = asyncio.create_task(self.drained.wait())
        stopped = asyncio.create_task(self.stop.wait())
        await asyncio.wait({done, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            grace = self.cfg.pipeline.shutdown_grace_s
            log.info("shutdown_started", grace_s=grace, in_flight_steps=self.gate.in_flight)
            await asyncio.wait({done}, timeout=grace)  # finish what is in flight, if it fits
        done.cancel()
        stopped.cancel()

    def _check_drained(self) -> None:
        if self.producer_done and self.gate.in_flight == 0 and not self.collector.pending_steps and not self._unreported():
            self.drained.set()

    # ------------------------------------------------------------------ stages

    async def _produce(self) -> None:
        for plan in self._plans():
            if self.stop.is_set():
                break
            await self.gate.acquire()  # <- the overlap: at most max_policy_lag + 1 steps ahead
            if self.stop.is_set():
                await self.gate.finish()
                break
            await self.gen_q.put(self._training_work(plan))
            if self._validation_due(plan.step):
                await self.gen_q.put(self._validation_work(plan.step))
        self.producer_done = True
        self._check_drained()

    async def _generate(self) -> None:
        device_user.set("generator")
        while True:
            work = await self.gen_q.get()
            if self.stop.is_set():  # stopping: do not start new samples
                self._route(self.collector.drop(work.split, work.step, work.trajectories))  # type: ignore[arg-type]
                log.info("trajectories_dropped", split=work.split, step=work.step, n=work.trajectories, reason="shutdown")
                continue
            trajectories = await self._sample(work)
            for t in trajectories:
                await self.judge_q.put(t)  # blocks while the judge is behind: backpressure

    async def _sample(self, work: Work) -> list[Trajectory]:
        if work.split == "train":
            return await self.p.generator.generate(list(work.requests))
        async with self.policy_lock:  # the saved `best` must be exactly the validated adapter
            weights = await self.p.device.run(adapter_state, self.p.policy)
            self.snapshots[work.step] = _Snapshot(weights, self.trainer_state())
            return await self.p.generator.generate(list(work.requests))

    async def _judge(self) -> None:
        while True:
            t = await self.judge_q.get()
            with self.meters["judge"].busy():
                scored = await self.p.judge.score_trajectory(t)
            await self.scored_q.put(scored)

    async def _collect(self) -> None:
        while True:
            self._route(self.collector.add(await self.scored_q.get()))
            if self.metrics:
                self.metrics.heartbeat()

    def _route(self, done: StepBatch | ValidationResult | None) -> None:
        if isinstance(done, StepBatch):
            # In step order: a step judged early waits for the one before it, so progress and
            # checkpoints always describe a prefix of the run and the lag bound holds.
            self.ready[done.step] = done
            while self.next_to_learn in self.ready:
                self.learn_q.put_nowait(self.ready.pop(self.next_to_learn))  # the gate bounds it
                self.next_to_learn += 1
        elif isinstance(done, ValidationResult):
            self._on_validation(done)

    async def _learn(self) -> None:
        device_user.set("learner")
        while True:
            self.learner_idle.set()
            if self.stopping:  # checked before taking a batch: a stop never starts a new step
                return
            batch = await self.learn_q.get()
            if self.stopping:  # woken with a batch after the stop: leave it unlearned
                return
            self.learner_idle.clear()
            await self._learn_one(batch)
            self._check_drained()

    async def _learn_one(self, batch: StepBatch) -> None:
        if batch.tally.dropped == batch.tally.total:  # abandoned at shutdown: not learned, not done
            self.reports.pop(batch.step, None)
        else:
            # Once started, a step is learned AND recorded, even if the run is cancelled
            # meanwhile: new weights never exist without the progress that goes with them.
            metrics = await finish_then_cancel(self._learn_and_record(batch))
            if metrics.stepped:
                await self._publish_weights()  # before the gate lets the next step be sampled
        await self.gate.finish()

    async def _learn_and_record(self, batch: StepBatch) -> StepMetrics:
        async with self.policy_lock:  # weights and progress move together (for snapshots)
            try:
                metrics = await self.p.learner.step(batch.groups)
            except BaseException:
                self.learner_failed = True  # the weights may be half-updated: no final latest
                raise
            self._on_learned(batch, metrics)
            if self._latest_due(batch.step):
                await self._save_latest()
        self._emit_ready_steps()
        return metrics

    # ------------------------------------------------------------------ policy decisions

    def _plans(self) -> Iterator[StepPlan]:
        """The steps this run still has to do: from the resume point to `total_steps`."""
        cfg = self.cfg
        for plan in plan_steps(self.p.train, seed=cfg.data.seed, batch_contexts=cfg.training.batch_contexts,
                               epochs=cfg.training.epochs, start_step=self.progress.next_step):
            if plan.step > self.total_steps:
                return
            yield plan

    def _validation_due(self, step: int) -> bool:
        every = self.cfg.validation.every_steps
        return bool(every) and bool(self.p.validation) and step % every == 0

    def _training_work(self, plan: StepPlan) -> Work:
        attempts = self.cfg.training.attempts
        self.collector.expect_training(plan, attempts)
        self.reports[plan.step] = _StepReport(wants_validation=self._validation_due(plan.step))
        return Work("train", plan.step, tuple(
            SampleRequest(c, "train", plan.step, i, attempts) for i, c in enumerate(plan.contexts)))

    def _validation_work(self, step: int) -> Work:
        contexts = validation_contexts(self.cfg, self.p.validation)
        self.collector.expect_validation(step, contexts, self.cfg.validation.attempts)
        return validation_work(self.cfg, contexts, step)

    def _on_validation(self, result: ValidationResult) -> None:
        snapshot = self.snapshots.pop(result.step, None)
        best = self.summary.best_score
        trusted = result.judge_failed_share <= self.cfg.validation.max_failed_share
        if not trusted:
            log.warning("validation_not_trusted", step=result.step, score=result.score,
                        judge_failed_share=round(result.judge_failed_share, 4),
                        limit=self.cfg.validation.max_failed_share)
        if trusted and result.score is not None and (best is None or result.score > best):
            self.summary.best_score = result.score
            if snapshot is not None:  # saved under the step its weights had learned, with its state
                trainer = replace(snapshot.trainer, best_score=result.score)
                self._save("best", snapshot.weights, trainer, validation_score=result.score,
                           validation_round=result.step)
        self.reports.setdefault(result.step, _StepReport(wants_validation=True)).validation = result
        self._emit_ready_steps()
        self._check_drained()

    def _on_learned(self, batch: StepBatch, metrics: StepMetrics) -> None:
        plan = batch.plan
        self.progress.last_step, self.progress.last_epoch, self.progress.last_position = plan.step, plan.epoch, plan.position
        self.learned_here += 1
        report = self.reports.setdefault(plan.step, _StepReport())
        report.metrics, report.batch = metrics, batch

    def _latest_due(self, step: int) -> bool:
        """A `latest` every `latest_every_steps` steps; the last step's is the final one."""
        every = self.cfg.checkpoints.latest_every_steps
        return bool(every) and step % every == 0 and step < self.total_steps

    async def _publish_weights(self) -> None:
        """Remote generation: save the adapter where the servers read it, then hot-load it there."""
        from .remote import adapter_folder, prune_old_adapters

        root, version = self.p.adapter_root, self.p.policy.version
        if root is None or version == 0 or version % self.cfg.generator.sync_every_steps:
            return
        folder = adapter_folder(root, version)
        await self.p.device.run(save_adapter, self.p.policy, folder)
        await self.p.generator.load_weights(version, str(folder))
        await prune_old_adapters(root)

    # ------------------------------------------------------------------ checkpoints

    def trainer_state(self) -> TrainerState:
        pr = self.progress
        return TrainerState(
            step=pr.last_step, epoch=pr.last_epoch, position=pr.last_position + 1,
            policy_version=self.p.policy.version, best_score=self.summary.best_score,
            config_digest=self.cfg.digest(), rng=capture_rng(),
        )

    def _save(self, kind: str, weights: dict, trainer: TrainerState, *, validation_score: float | None = None,
              validation_round: int | None = None, learner_state: dict | None = None) -> None:
        if self.p.writer is None:
            return
        self.p.writer.submit(SaveRequest(
            kind=kind, step=trainer.step, validation_score=validation_score, adapter=weights,  # type: ignore[arg-type]
            adapter_config=adapter_config(self.p.policy), learner_state=learner_state, trainer=trainer,
            validation_round=validation_round,
        ))

    async def _save_latest(self) -> None:
        """Hand the writer private copies of the weights and the optimizer state, made on the
        device (between learner steps), so the next step cannot change them under the upload."""
        if self.p.writer is None or self.progress.last_step == 0:
            return
        weights, state = await self.p.device.run(self._copy_for_checkpoint)
        self._save("latest", weights, self.trainer_state(), learner_state=state)

    def _copy_for_checkpoint(self) -> tuple[dict, dict]:
        return adapter_state(self.p.policy), snapshot(self.p.learner.state_dict())

    async def _final_checkpoint(self) -> None:
        if self.p.writer is None or self.learned_here == 0:  # nothing new since the last `latest`
            return
        if self.learner_failed:
            log.warning("final_checkpoint_skipped", reason="the learner failed during a step",
                        last_step=self.progress.last_step)
            return
        async with self.policy_lock:
            await self._save_latest()

    # ------------------------------------------------------------------ shutdown and reporting

    def _abandon_leftovers(self) -> None:
        for q in (self.gen_q, self.judge_q, self.scored_q, self.learn_q):
            while not q.empty():
                q.get_nowait()
        dropped = self.collector.abandon_all()
        if dropped:
            log.warning("trajectories_dropped", reason="shutdown", by_step=dropped)
        for report in self.reports.values():
            report.wants_validation = report.wants_validation and report.validation is not None
        self._emit_ready_steps(final=True)

    def _unreported(self) -> bool:
        return any(r.metrics is not None for r in self.reports.values())

    def _emit_ready_steps(self, final: bool = False) -> None:
        for step in sorted(self.reports):
            r = self.reports[step]
            if r.metrics is None or (r.wants_validation and r.validation is None and not final):
                if final:
                    continue
                break
            del self.reports[step]
            self._emit_step(step, r)

    def _emit_step(self, step: int, r: _StepReport) -> None:
        assert r.metrics is not None and r.batch is not None
        now = time.perf_counter()
        step_s, self._t_last = now - self._t_last, now
        self.summary.steps += 1
        self.summary.step_times.append(step_s)
        rewards = r.batch.rewards
        busy = self.window.lap()
        self.summary.step_busy.append(busy)
        judge_calls = self.p.judge.stats.requests
        fields: dict[str, Any] = {
            "step": step,
            "epoch": r.batch.plan.epoch,
            "reward_mean": round(statistics.fmean(rewards), 4) if rewards else None,
            "reward_std": round(statistics.pstdev(rewards), 4) if len(rewards) > 1 else 0.0,
            "skipped_groups": r.metrics.skipped_groups,
            "policy_lag": r.metrics.policy_lag_max or 0,
            "trajectories": r.batch.tally.as_dict(),
            "policy_version": r.metrics.version,
            **{k: getattr(r.metrics, k) for k in LEARNER_FIELDS},
            "step_s": round(step_s, 3),
            "queue_depths": {"generator": self.gen_q.qsize(), "judge": self.judge_q.qsize(),
                             "collector": self.scored_q.qsize(), "learner": self.learn_q.qsize()},
            "busy": {k: v for k, v in busy.items() if k != "device"},
            "device_idle_fraction": round(1.0 - busy["device"], 4),
            "judge_rpm": round((judge_calls - self._judge_calls0) * 60.0 / max(step_s, 1e-9), 1),
        }
        self._judge_calls0 = judge_calls
        if r.validation is not None:
            fields["validation_score"] = r.validation.score
            fields["validation_trajectories"] = r.validation.tally.as_dict()
            fields["validation_judge_failed_share"] = round(r.validation.judge_failed_share, 4)
            fields["best_score"] = self.summary.best_score
        log.info("step", **fields)
        self._observe(fields)

    def _observe(self, fields: dict[str, Any]) -> None:
        if self.metrics:
            self.metrics.on_step(fields)
            js = self.p.judge.stats
            self.metrics.on_judge(js.requests, js.tokens, js.http_429, js.failures, js.retries, js.paused)
        if self.progress_line:
            self.progress_line.update(fields)
        if self.tracker:
            self.tracker.log_step(fields)


class _DeviceMeter:
    """The device's busy seconds (all of them, or one stage's) as a meter for Window."""

    def __init__(self, device: Device, user: str | None = None) -> None:
        self._device = device
        self._user = user

    @property
    def busy_s(self) -> float:
        return self._device.busy_by[self._user] if self._user else self._device.busy_s


# ---------------------------------------------------------------- shared with eval and the sequential loop


def adapter_config(policy: Policy) -> dict:
    """The PEFT adapter config as saved next to the weights, naming the base model by its id."""
    config = policy.model.peft_config["default"].to_dict()
    config["base_model_name_or_path"] = policy.base_name
    return config


def validation_contexts(cfg: Config, validation: list[Context]) -> list[Context]:
    limit = cfg.validation.max_contexts
    return validation[:limit] if limit else validation


def validation_work(cfg: Config, contexts: list[Context], step: int) -> Work:
    """A validation round: the same requests (hence the same sampling seeds) for a run and `eval`."""
    attempts = cfg.validation.attempts
    return Work("validation", step, tuple(
        SampleRequest(c, "validation", step, i, attempts) for i, c in enumerate(contexts)))


async def score_all(judge: Judge, trajectories: list[Trajectory], concurrency: int) -> list[ScoredTrajectory]:
    """Judge many trajectories at once, at most `concurrency` offers in flight."""
    limit = asyncio.Semaphore(max(1, concurrency))

    async def score(t: Trajectory) -> ScoredTrajectory:
        async with limit:
            return await judge.score_trajectory(t)

    return list(await asyncio.gather(*(score(t) for t in trajectories)))
