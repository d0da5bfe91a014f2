"""The learner stage: `training.minibatches` GRPO optimizer steps on the LoRA weights per
training batch (default 1).

    groups ──prepare──▶ Batch (advantages; no-signal groups counted, never trained on)
           ──Device.run(_step_sync)──▶ [K > 1: π_old's log-probs, one no-grad pass]
              per minibatch: micro-batches: recompute log-probs under grad, clipped
              importance-weighted loss (grpo.py), backward ──▶ clip grads, AdamW
           ──▶ LR schedule, policy.version += 1 ──▶ StepMetrics (one `learner_step` log event)

The step runs in the device's worker thread, behind the lock it shares with the generator, so
the event loop keeps serving judge and S3 I/O. Log-probs are recomputed with the model in eval
mode (LoRA dropout off, as TRL's `disable_dropout`). With the default decoupled correction
(grpo.py) and one minibatch the PPO ratio is taken against this very forward pass (π_old, the
weights the step updates), so it is 1 in any precision and the clip never fires; with K > 1
minibatches π_old is the pass before the first of them, and the clip bounds the batch's later
steps (the trust region). The policy version counts batches, not optimizer steps. The sampler's numerical
mismatch (bf16 kernels, another engine) and the policy lag go into the truncated importance
weight (`tis_weight_mean`, `tis_capped_fraction`). `logprob_mismatch` reports how far sampler and
trainer disagree on tokens sampled by the current weights.
A step with nothing to learn from (every group without signal) does no device work, makes no
optimizer step and leaves the policy version unchanged.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import torch

from ..config import TrainingConfig
from ..errors import ModelError
from ..flow.records import Group
from ..ops.log import get_logger
from ..policy.device import Device
from ..policy.logprobs import sequence_logprobs
from ..policy.model import Policy
from .grpo import LossStats, group_stats, loss_denominator, lr_factor, policy_loss


@dataclass(frozen=True, slots=True)
class TrainingSample:
    """One trajectory as the loss sees it: tokens, behaviour log-probs and its advantage."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    behaviour_logprobs: tuple[float, ...]
    advantage: float
    policy_version: int


@dataclass(slots=True)
class Batch:
    """What one training step learns from, and what it skipped (counted, never silent)."""

    samples: list[TrainingSample] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)  # every scored reward of the step
    versions: list[int] = field(default_factory=list)  # policy version of every scored member
    groups: int = 0
    zero_variance_groups: int = 0  # all rewards equal
    small_groups: int = 0  # fewer than two scored members: no baseline
    excluded: int = 0  # judge_failed or dropped members
    masked_truncated: int = 0  # truncated members left out of the loss (truncated = "mask")
    bad_logprobs: int = 0  # members whose behaviour log-probs are not finite: left out of the loss

    @property
    def skipped_groups(self) -> int:
        return self.zero_variance_groups + self.small_groups


def prepare_batch(groups: Sequence[Group], cfg: TrainingConfig) -> Batch:
    """Advantages per group from its scored members; the rules are in grpo.py's docstring."""
    batch = Batch(groups=len(groups))
    for group in groups:
        scored = group.scored
        batch.excluded += len(group.members) - len(scored)
        rewards = [float(m.reward) for m in scored if m.reward is not None]
        batch.rewards.extend(rewards)
        batch.versions.extend(m.trajectory.policy_version for m in scored)
        stats = group_stats(rewards, cfg.scale_rewards)
        if stats.advantages is None:
            if stats.zero_variance:
                batch.zero_variance_groups += 1
            else:
                batch.small_groups += 1
            continue
        for member, advantage in zip(scored, stats.advantages):
            traj = member.trajectory
            if traj.truncated and cfg.truncated == "mask":
                batch.masked_truncated += 1
                continue
            if not traj.completion_ids:  # nothing was sampled: no token to credit
                continue
            if not all(math.isfinite(lp) for lp in traj.logprobs):  # a backend's bug, not signal
                batch.bad_logprobs += 1
                continue
            batch.samples.append(TrainingSample(traj.prompt_ids, traj.completion_ids, traj.logprobs,
                                        advantage, traj.policy_version))
    return batch


@dataclass(slots=True)
class StepMetrics:
    """One learner step, as logged (`learner_step`) and returned to the pipeline."""

    stepped: bool  # an optimizer step was made (and the policy version bumped)
    skip_reason: str | None  # "no_signal" | "non_finite" (loss or gradient) when not stepped
    version: int  # policy version after the step
    loss: float | None
    reward_mean: float | None
    reward_std: float | None
    groups: int
    skipped_groups: int
    zero_variance_groups: int
    zero_variance_share: float
    trajectories: int  # entered the loss
    tokens: int  # completion tokens in the loss
    excluded: int
    masked_truncated: int
    bad_logprobs: int
    ratio_mean: float | None
    ratio_min: float | None
    ratio_max: float | None
    clipped_fraction: float | None
    tis_weight_mean: float | None  # mean importance weight w (decoupled correction)
    tis_capped_fraction: float | None  # share of tokens truncated at training.tis_cap
    logprob_mismatch: float | None  # mean |logp_sampler - logp_trainer| on tokens of this version
    kl: float | None  # only when beta > 0
    grad_norm: float | None  # before clipping
    lr: float
    policy_lag_mean: float | None
    policy_lag_max: int | None
    step_time_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Learner:
    """AdamW on the policy's LoRA parameters, one optimizer step per `step(groups)`."""

    def __init__(self, policy: Policy, device: Device, cfg: TrainingConfig, total_steps: int,
                 temperature: float = 1.0) -> None:
        self.policy = policy
        self.device = device
        self.cfg = cfg
        self.temperature = temperature  # the sampling temperature: behaviour log-probs use it
        self.params = [p for p in policy.model.parameters() if p.requires_grad]
        if not self.params:
            raise ModelError(f"model '{policy.base_name}' has no trainable (LoRA) parameters")
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate,
                                           weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, warmup_steps=cfg.warmup_steps, total_steps=total_steps,
                                schedule=cfg.lr_schedule),
        )
        self.optimizer_steps = 0

    def prepare(self, groups: Sequence[Group]) -> Batch:
        return prepare_batch(groups, self.cfg)

    async def step(self, groups: Sequence[Group]) -> StepMetrics:
        batch = self.prepare(groups)
        if batch.samples:
            metrics = await self.device.run(self._step_sync, batch)
        else:  # nothing to learn: no device time, no optimizer step, no new version
            metrics = self._metrics(batch, time.perf_counter(), skip_reason="no_signal")
        get_logger("learner").info("learner_step", **metrics.as_dict())
        return metrics

    # ------------------------------------------------------------ the step (worker thread)

    def _step_sync(self, batch: Batch) -> StepMetrics:
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        lags = self._lags(batch)  # against the version that was trained, before the bump
        parts = minibatches(len(batch.samples), self.cfg.minibatches)
        proximal = None
        if len(parts) > 1 and self.cfg.off_policy_correction == "decoupled":
            proximal = self.proximal_logprobs(batch.samples)
        losses, norms, stats, steps = [], [], LossStats(), 0
        for part in parts:
            loss, part_stats = self.accumulate_gradients([batch.samples[i] for i in part],
                                                         None if proximal is None else [proximal[i] for i in part])
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm))
            losses.append(loss)
            norms.append(grad_norm)
            stats = stats.merge(part_stats)
            if math.isfinite(grad_norm) and math.isfinite(loss):  # else: keep the weights clean
                self.optimizer.step()
                steps += 1
            self.optimizer.zero_grad(set_to_none=True)
        loss, grad_norm = statistics.fmean(losses), statistics.fmean(norms)
        if steps == 0:
            return self._metrics(batch, start, skip_reason="non_finite", loss=loss,
                                 stats=stats, grad_norm=grad_norm)
        self.scheduler.step()  # the schedule counts batches (training steps), as the version does
        self.optimizer_steps += steps
        self.policy.version += 1
        return self._metrics(batch, start, loss=loss, stats=stats, grad_norm=grad_norm, lr=lr,
                             lags=lags)

    def proximal_logprobs(self, samples: list[TrainingSample]) -> list[torch.Tensor]:
        """π_old's log-probs of every sample: one no-grad pass before the batch's first step."""
        model = self.policy.model
        model.eval()
        out: list[torch.Tensor] = [torch.zeros(0)] * len(samples)
        with torch.no_grad():
            for micro in _micro_batches(range(len(samples)), samples, self.cfg.micro_batch_size):
                rows = sequence_logprobs(model, [samples[i].prompt_ids for i in micro],
                                         [samples[i].completion_ids for i in micro], self.temperature,
                                         self.policy.pad_id)
                for i, row in zip(micro, rows):
                    out[i] = row.float()
        return out

    def accumulate_gradients(self, samples: list[TrainingSample],
                             proximal: list[torch.Tensor] | None = None) -> tuple[float, LossStats]:
        """Fresh gradients of one optimizer step's loss, summed over micro-batches (worker thread).

        Each micro-batch's loss is divided by the whole step's denominator, so the accumulated
        gradient is exactly that of one big batch, whatever `micro_batch_size` is.
        """
        model = self.policy.model
        model.eval()  # dropout off: see the module docstring
        denominator = loss_denominator([len(s.completion_ids) for s in samples], self.cfg.loss_aggregation)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, stats = 0.0, LossStats()
        # Grad mode is thread-local: the worker thread must not inherit a caller's no_grad.
        with torch.enable_grad():
            for micro in _micro_batches(range(len(samples)), samples, self.cfg.micro_batch_size):
                old = None if proximal is None else [proximal[i] for i in micro]
                loss, micro_stats = self._micro_step(model, [samples[i] for i in micro], denominator, old)
                loss.backward()
                loss_sum += loss.item()
                stats = stats.merge(micro_stats)
        return loss_sum, stats

    def _micro_step(self, model: Any, micro: list[TrainingSample], denominator: float,
                    proximal: list[torch.Tensor] | None) -> tuple[torch.Tensor, LossStats]:
        prompts = [s.prompt_ids for s in micro]
        completions = [s.completion_ids for s in micro]
        dev = self.policy.device
        pad = self.policy.pad_id
        logp = _pad(sequence_logprobs(model, prompts, completions, self.temperature, pad)).float()
        behaviour = _pad([torch.tensor(s.behaviour_logprobs, dtype=torch.float32) for s in micro])
        mask = _pad([torch.ones(len(s.completion_ids)) for s in micro])
        advantages = torch.tensor([s.advantage for s in micro], dtype=torch.float32)
        fresh = torch.tensor([s.policy_version == self.policy.version for s in micro])
        ref = None
        if self.cfg.beta > 0:
            with torch.no_grad(), model.disable_adapter():  # the base model, exactly
                ref = _pad(sequence_logprobs(model, prompts, completions, self.temperature, pad)).float()
        return policy_loss(
            logp, behaviour.to(dev), advantages.to(dev), mask.to(dev),
            self.cfg.clip_eps_low, self.cfg.clip_eps_high, self.cfg.loss_aggregation,
            correction=self.cfg.off_policy_correction, tis_cap=self.cfg.tis_cap,
            denominator=denominator, ref_logp=ref, beta=self.cfg.beta, fresh=fresh,
            old_logp=None if proximal is None else _pad(proximal).to(dev),
        )

    # ------------------------------------------------------------ metrics and state

    def _lags(self, batch: Batch) -> list[int]:
        return [self.policy.version - v for v in batch.versions]

    def _metrics(self, batch: Batch, start: float, *, skip_reason: str | None = None,
                 loss: float | None = None, stats: LossStats | None = None,
                 grad_norm: float | None = None, lr: float | None = None,
                 lags: list[int] | None = None) -> StepMetrics:
        lags = self._lags(batch) if lags is None else lags
        trained = stats is not None and stats.tokens > 0
        return StepMetrics(
            stepped=skip_reason is None,
            skip_reason=skip_reason,
            version=self.policy.version,
            loss=loss,
            reward_mean=statistics.fmean(batch.rewards) if batch.rewards else None,
            reward_std=statistics.pstdev(batch.rewards) if batch.rewards else None,
            groups=batch.groups,
            skipped_groups=batch.skipped_groups,
            zero_variance_groups=batch.zero_variance_groups,
            zero_variance_share=batch.zero_variance_groups / batch.groups if batch.groups else 0.0,
            trajectories=len(batch.samples) if skip_reason is None else 0,
            tokens=stats.tokens if stats is not None and skip_reason is None else 0,
            excluded=batch.excluded,
            masked_truncated=batch.masked_truncated,
            bad_logprobs=batch.bad_logprobs,
            ratio_mean=stats.ratio_mean if trained else None,
            ratio_min=stats.ratio_min if trained else None,
            ratio_max=stats.ratio_max if trained else None,
            clipped_fraction=stats.clipped_fraction if trained else None,
            tis_weight_mean=stats.weight_mean if trained else None,
            tis_capped_fraction=stats.capped_fraction if trained else None,
            logprob_mismatch=stats.logprob_mismatch if trained else None,
            kl=stats.kl_mean if trained and self.cfg.beta > 0 else None,
            grad_norm=grad_norm,
            lr=self.optimizer.param_groups[0]["lr"] if lr is None else lr,
            policy_lag_mean=statistics.fmean(lags) if lags else None,
            policy_lag_max=max(lags) if lags else None,
            step_time_s=time.perf_counter() - start,
        )

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, scheduler and version: what a checkpoint needs to resume this learner."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "version": self.policy.version,
            "optimizer_steps": self.optimizer_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.policy.version = int(state["version"])
        self.optimizer_steps = int(state["optimizer_steps"])


def minibatches(n: int, k: int) -> list[list[int]]:
    """Indices of n samples in min(k, n) minibatches, one optimizer step each. Interleaved: the
    samples come group by group, so every minibatch holds members of every group it can."""
    k = max(1, min(k, n))
    return [list(range(j, n, k)) for j in range(k)]


def _micro_batches(indices: Iterable[int], samples: Sequence[TrainingSample], size: int) -> Iterator[list[int]]:
    # Similar lengths together: less padding, so less work per micro-batch.
    ordered = sorted(indices, key=lambda i: len(samples[i].prompt_ids) + len(samples[i].completion_ids))
    for i in range(0, len(ordered), size):
        yield ordered[i:i + size]


def _pad(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=0.0)
