"""Checkpoints asked for and not written yet: `SaveRequest`, `Job` and the `PendingQueue`.

Pure policy, no I/O: the writer (writer.py) pushes what the pipeline submits, takes the front
job when its retry time has come, and requeues a failed one. The queue's invariant is in its
docstring, where it is enforced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .formats import Kind
from .state import TrainerState

if TYPE_CHECKING:
    import torch

    from .files import Staged


@dataclass
class SaveRequest:
    kind: Kind
    step: int
    validation_score: float | None
    adapter: dict[str, torch.Tensor]  # CPU LoRA weights, get_peft_model_state_dict naming
    adapter_config: dict  # peft LoraConfig.to_dict(), base_model_name_or_path = the model id
    learner_state: dict | None  # Learner.state_dict(): optimizer + scheduler; None for a weights-only best
    trainer: TrainerState
    # a best: the step whose validation round sampled these weights; `eval` redraws that round
    validation_round: int | None = None


def snapshot(value: Any) -> Any:
    """A private CPU copy of every tensor in a nest of dicts, lists and tuples: what a caller
    of `CheckpointWriter.submit` hands over (the learner changes its own tensors in place)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(v) for v in value)
    return value  # numbers, strings, None: immutable


@dataclass
class Job:
    """One checkpoint folder to write, and the pointers to move to it once written."""

    step: int
    kinds: set[str]
    request: SaveRequest  # the request whose files are written (a latest's, when merged)
    validation_score: float | None
    validation_round: int | None = None
    attempts: int = 0
    not_before: float = 0.0  # monotonic time before which a failed job is not retried
    staged: Staged | None = None  # serialised files, kept across retries
    pointers_done: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, req: SaveRequest) -> Job:
        return cls(req.step, {req.kind}, req, req.validation_score, req.validation_round)

    @property
    def latest_only(self) -> bool:
        return self.kinds == {"latest"}

    def absorb(self, other: Job) -> None:
        """`other` is for the same step: one folder serves both kinds. The files written are
        the ones carrying the learner state (a latest's), so the folder is resumable."""
        self.kinds |= other.kinds
        self.pointers_done |= other.pointers_done
        self.not_before = max(self.not_before, other.not_before)  # a retry keeps its backoff
        self.attempts = max(self.attempts, other.attempts)
        if other.validation_score is not None:
            self.validation_score = other.validation_score
            self.validation_round = other.validation_round
        if other.request.learner_state is not None and self.request.learner_state is None:
            self.request, self.staged = other.request, other.staged  # the writer sweeps the other folder


class PendingQueue:
    """Checkpoints waiting to be written, oldest first. Pure policy, no I/O.

    Invariants: len(jobs) <= capacity; at most one pending job has kind `best`; at most one job
    per step. Events:
      push(job)     a newer best supersedes an older pending best; a job for a pending step merges
                    into it; when full, the oldest latest-only job is superseded (a best is never
                    dropped for a latest: with capacity 1 and a best pending, the new latest is).
      requeue(job)  a failed write goes back to the front, under the same rules.
      next_ready    the front job once its retry time has come (FIFO keeps pointers in order).
    Each event returns the jobs it superseded.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.jobs: list[Job] = []

    def __len__(self) -> int:
        return len(self.jobs)

    def push(self, job: Job) -> list[Job]:
        return self._insert(job, front=False)

    def requeue(self, job: Job) -> list[Job]:
        return self._insert(job, front=True)

    def next_ready(self, now: float) -> tuple[Job | None, float | None]:
        """(the front job, None) if it may start now, else (None, seconds to wait or None)."""
        if not self.jobs:
            return None, None
        front = self.jobs[0]
        if front.not_before <= now:
            return self.jobs.pop(0), None
        return None, front.not_before - now

    def _insert(self, job: Job, *, front: bool) -> list[Job]:
        same = next((j for j in self.jobs if j.step == job.step), None)
        if same is not None:
            same.absorb(job)
            if front:  # a retried job keeps its place at the head of the line
                self.jobs.remove(same)
                self.jobs.insert(0, same)
            return []
        superseded: list[Job] = []
        pending_best = next((j for j in self.jobs if "best" in j.kinds), None)
        if "best" in job.kinds and pending_best is not None:
            # pending jobs are newer than a retried one, and older than a pushed one
            older = job if front else pending_best
            older.kinds.discard("best")
            if not older.kinds:
                superseded.append(older)
                if older is job:
                    return superseded
                self.jobs.remove(older)
        if front:
            self.jobs.insert(0, job)
        else:
            self.jobs.append(job)
        while len(self.jobs) > self.capacity:
            # the oldest latest-only job gives way; a best never does (at most one is pending)
            victim = next((j for j in self.jobs if j.latest_only), job)
            self.jobs.remove(victim)
            superseded.append(victim)
        return superseded
