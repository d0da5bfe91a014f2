"""GRPO maths: group advantages, the clipped importance-weighted policy loss, the LR schedule.

Pure functions of floats and tensors: no model, no I/O, tested on hand-made numbers.

Advantages (one group = one context's attempts at one step):

    A_i = r_i - mean(r)                      scale = "none"   (Dr. GRPO)
    A_i = (r_i - mean(r)) / (std(r) + 1e-4)  scale = "group"  (GRPO paper, TRL's default)

`std` is the sample standard deviation (n - 1), as in TRL. A group whose rewards are all equal,
or that has a single scored member, has no baseline to beat: it carries no signal, and the
learner spends no work on it (`group_stats(...).advantages is None`).

Loss, per completion token t of trajectory i. Three policies take part:
- π_behaviour: the sampler that drew the token (up to `max_policy_lag` versions old, and maybe
  another engine: vLLM, bf16 kernels); its log-probs travel with the trajectory;
- π_old: the trainer's own view of the weights this optimizer step updates (AReaL's proximal
  policy);
- π_θ: the same weights, with gradient.

`training.off_policy_correction = "decoupled"` (default; AReaL's decoupled PPO, TRL's and verl's
importance-sampling corrections, Yao et al. 2025):

    ρ_it = exp(logπ_θ(y_it) - logπ_old(y_it))                      the PPO ratio: policy change
    w_it = min(exp(logπ_old(y_it) - logπ_behaviour(y_it)), C)       no gradient: lag + sampler mismatch
    l_it = -w_it · min(ρ_it A_i, clip(ρ_it, 1 - ε_low, 1 + ε_high) A_i) + β k3_it

π_old is π_θ before the batch's first optimizer step. With `training.minibatches = 1` (default)
a batch is learned in ONE optimizer step, so π_old's log-probs are those of the step's own forward
pass, detached (as TRL does with one iteration per batch): ρ = 1 exactly, in any precision, and the
clip cannot fire (the ratio and clip statistics then only confirm it); the weight carries the
sampler's noise and the lag. With K > 1 minibatches (K optimizer steps per batch, AReaL's
proximal policy), π_old's log-probs come from one no-grad pass before the first step
(`old_logp`): from the second minibatch on ρ ≠ 1 and the clip bounds how far one batch moves the
policy (the trust region). C is `training.tis_cap` (0: no cap, the plain importance weight).

`"behaviour"` (the first build's loss, kept for comparison): the ratio is taken against the
sampler itself, ρ_it = exp(logπ_θ - logπ_behaviour), with no weight; `tis_cap` then truncates
large ratios on negative advantages (the dual clip: -C·A and no gradient), which PPO's clip never
bounds. In bf16 or with another engine ρ ≠ 1 even on-policy, and the clip reacts to noise.

    k3_it = exp(logπ_ref - logπ_θ) - (logπ_ref - logπ_θ) - 1     (Schulman's k3 KL estimator)

ε_high > ε_low is DAPO's "clip-higher": it leaves room for unlikely tokens with a positive
advantage to grow, which keeps entropy from collapsing.

Aggregation (how the per-token losses become one number):
- `token_mean` (default): Σ_i Σ_t l_it / Σ_i |y_i|, over the whole optimizer step. Every token
  weighs the same, so a long completion is not diluted (sequence_mean divides its tokens by its
  length) and short wrong answers are not favoured; DAPO's argument, TRL's default rule.
- `sequence_mean` (GRPO paper): (1/N) Σ_i (1/|y_i|) Σ_t l_it. Each trajectory weighs the same;
  a token of a short completion weighs more than a token of a long one.
With micro-batches, the denominator is the whole step's (`loss_denominator`), so the gradients
accumulated over micro-batches are exactly those of the full batch.

Truncated completions (hit `max_new_tokens` before EOS), `training.truncated`:
- `keep` (default): judged like any other offer; an unfinished XML offer usually scores low on
  xml_format, and that low reward is the signal that teaches the policy to finish.
- `mask`: excluded from the loss (DAPO's overlong filtering), still counted in the group's
  reward baseline, so a cut-off offer neither rewards nor punishes the tokens it did write.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

Scale = Literal["group", "none"]
Aggregation = Literal["token_mean", "sequence_mean"]
Schedule = Literal["constant", "linear", "cosine"]
Correction = Literal["decoupled", "behaviour"]

STD_EPS = 1e-4  # added to the group std, as in TRL: bounds advantages of near-equal groups
EQUAL_TOL = 1e-6  # rewards closer than this are "all equal" (judge scores are coarse)
LOG_RATIO_CAP = 20.0  # |log ρ| is capped before exp: a stale token cannot overflow to inf


# ---------------------------------------------------------------- advantages


@dataclass(frozen=True, slots=True)
class GroupStats:
    """One group's rewards summarised; `advantages` is None when it carries no signal."""

    size: int
    mean: float
    std: float
    advantages: tuple[float, ...] | None

    @property
    def zero_variance(self) -> bool:
        """All rewards equal among two or more members (a single member is not counted here)."""
        return self.size >= 2 and self.advantages is None


def group_stats(rewards: Sequence[float], scale: Scale = "group") -> GroupStats:
    """Mean, std and advantages of one group's rewards (see the module docstring)."""
    if scale not in ("group", "none"):
        raise ValueError(f"scale must be 'group' or 'none', got {scale!r}")
    values = [float(r) for r in rewards]
    if any(not math.isfinite(r) for r in values):
        raise ValueError(f"rewards must be finite, got {values}")
    n = len(values)
    if n == 0:
        return GroupStats(size=0, mean=0.0, std=0.0, advantages=None)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n >= 2 else 0.0
    if n < 2 or max(values) - min(values) <= EQUAL_TOL:
        return GroupStats(size=n, mean=mean, std=std, advantages=None)
    divisor = std + STD_EPS if scale == "group" else 1.0
    return GroupStats(size=n, mean=mean, std=std, advantages=tuple((r - mean) / divisor for r in values))


# ---------------------------------------------------------------- loss


@dataclass(slots=True)
class LossStats:
    """Sums over the tokens of one or more micro-batches; merge, then read the means."""

    tokens: int = 0
    ratio_sum: float = 0.0
    ratio_min: float = math.inf
    ratio_max: float = 0.0
    clipped_tokens: int = 0
    kl_sum: float = 0.0
    capped_tokens: int = 0  # truncated at tis_cap (the weight, or the dual clip in behaviour mode)
    weight_sum: float = 0.0  # of the importance weights w (decoupled only)
    weighted: bool = False  # whether a weight was applied (decoupled)
    fresh_tokens: int = 0  # tokens sampled by the current policy
    mismatch_sum: float = 0.0  # sum of |logp_trainer - logp_sampler| over those

    def merge(self, other: "LossStats") -> "LossStats":
        return LossStats(
            tokens=self.tokens + other.tokens,
            ratio_sum=self.ratio_sum + other.ratio_sum,
            ratio_min=min(self.ratio_min, other.ratio_min),
            ratio_max=max(self.ratio_max, other.ratio_max),
            clipped_tokens=self.clipped_tokens + other.clipped_tokens,
            kl_sum=self.kl_sum + other.kl_sum,
            capped_tokens=self.capped_tokens + other.capped_tokens,
            weight_sum=self.weight_sum + other.weight_sum,
            weighted=self.weighted or other.weighted,
            fresh_tokens=self.fresh_tokens + other.fresh_tokens,
            mismatch_sum=self.mismatch_sum + other.mismatch_sum,
        )

    @property
    def capped_fraction(self) -> float:
        """Share of tokens truncated at `tis_cap`."""
        return self.capped_tokens / self.tokens if self.tokens else 0.0

    @property
    def weight_mean(self) -> float | None:
        """Mean importance weight w over tokens (decoupled); None when no weight was applied."""
        return self.weight_sum / self.tokens if self.weighted and self.tokens else None

    @property
    def logprob_mismatch(self) -> float | None:
        """Mean |logp_trainer - logp_sampler| where both should agree; None without such tokens."""
        return self.mismatch_sum / self.fresh_tokens if self.fresh_tokens else None

    @property
    def ratio_mean(self) -> float:
        return self.ratio_sum / self.tokens if self.tokens else 0.0

    @property
    def clipped_fraction(self) -> float:
        """Share of tokens whose objective sits on the clip (they get no gradient)."""
        return self.clipped_tokens / self.tokens if self.tokens else 0.0

    @property
    def kl_mean(self) -> float:
        return self.kl_sum / self.tokens if self.tokens else 0.0


def loss_denominator(lengths: Sequence[int], aggregation: Aggregation) -> float:
    """What the summed loss of a whole optimizer step is divided by: tokens or trajectories."""
    if aggregation == "token_mean":
        return float(sum(lengths))
    if aggregation == "sequence_mean":
        return float(len(lengths))
    raise ValueError(f"aggregation must be 'token_mean' or 'sequence_mean', got {aggregation!r}")


@dataclass(frozen=True, slots=True)
class ImportanceWeight:
    """w = min(exp(logπ_old - logπ_behaviour), C) per token, without gradient."""

    values: torch.Tensor
    capped: torch.Tensor  # bool: the tokens whose weight was truncated at C


def importance_weight(old_logp: torch.Tensor, behaviour_logp: torch.Tensor, cap: float) -> ImportanceWeight:
    """The decoupled loss's truncated importance weight (see the module docstring); cap 0: none."""
    if old_logp.shape != behaviour_logp.shape:
        raise ValueError(f"shapes differ: old {tuple(old_logp.shape)}, behaviour {tuple(behaviour_logp.shape)}")
    log_w = (old_logp.detach() - behaviour_logp.detach().to(old_logp.dtype)).clamp(-LOG_RATIO_CAP, LOG_RATIO_CAP)
    capped = torch.zeros_like(log_w, dtype=torch.bool)
    if cap > 0.0:
        # compare and clamp in log space: exp of a large difference would overflow before the cap
        log_cap = math.log(cap)
        capped = log_w > log_cap
        log_w = log_w.clamp(max=log_cap)
    return ImportanceWeight(torch.exp(log_w), capped)


def policy_loss(
    logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
    aggregation: Aggregation = "token_mean",
    *,
    correction: Correction = "behaviour",
    tis_cap: float = 0.0,
    denominator: float | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    fresh: torch.Tensor | None = None,
    old_logp: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """The clipped, importance-weighted policy loss of a (micro-)batch, and its token stats.

    `logp` (π_θ, with grad), `behaviour_logp` (the sampler's), `mask` (1 on completion tokens, 0
    on padding) and `ref_logp` are [B, T]; `advantages` is [B]. `denominator` is the whole step's
    (`loss_denominator`); by default this batch's own, i.e. the batch is the whole step.
    `correction` picks the loss of the module docstring (the learner passes
    `training.off_policy_correction`; plain PPO against `behaviour_logp` is the default here),
    `tis_cap` its C. `fresh` ([B] bool) marks sequences sampled by the current weights: over
    their tokens |logp - behaviour| is pure numerical mismatch, reported in the stats.
    `old_logp` ([B, T], decoupled only): π_old from a pass before the batch's first optimizer
    step; by default `logp` itself, detached (one optimizer step per batch).
    """
    if logp.shape != behaviour_logp.shape or logp.shape != mask.shape:
        raise ValueError(f"shapes differ: logp {tuple(logp.shape)}, behaviour "
                         f"{tuple(behaviour_logp.shape)}, mask {tuple(mask.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages {tuple(advantages.shape)} do not match batch {logp.shape[0]}")
    if correction not in ("decoupled", "behaviour"):
        raise ValueError(f"correction must be 'decoupled' or 'behaviour', got {correction!r}")
    mask = mask.to(logp.dtype)
    on = mask > 0
    adv = advantages.to(logp.dtype).unsqueeze(1)
    behaviour_logp = behaviour_logp.to(logp.dtype)
    if correction == "behaviour":
        old_logp = behaviour_logp
    elif old_logp is None:
        old_logp = logp.detach()
    else:
        if old_logp.shape != logp.shape:
            raise ValueError(f"shapes differ: logp {tuple(logp.shape)}, old {tuple(old_logp.shape)}")
        old_logp = old_logp.detach().to(logp.dtype)
    ratio = torch.exp((logp - old_logp).clamp(-LOG_RATIO_CAP, LOG_RATIO_CAP))
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    weight = None
    if correction == "decoupled":
        weight = importance_weight(old_logp, behaviour_logp, tis_cap)
        per_token = weight.values * per_token
        capped = weight.capped
    elif tis_cap > 0.0:  # the dual clip on the behaviour ratio
        capped = (adv < 0) & (ratio > tis_cap)
        per_token = torch.where(capped, -tis_cap * adv, per_token)
    else:
        capped = torch.zeros_like(on)

    kl = None
    if beta > 0.0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs ref_logp (the base model's log-probs)")
        delta = ref_logp.to(logp.dtype) - logp
        kl = torch.exp(delta) - delta - 1.0
        per_token = per_token + beta * kl

    loss = _aggregate(per_token, mask, aggregation, denominator)
    stats = _token_stats(ratio.detach(), adv.detach(), mask, clip_low, clip_high, kl)
    stats.capped_tokens = int((capped & on).sum().item())
    if weight is not None:
        stats.weighted = True
        stats.weight_sum = float(weight.values[on].sum().item())
    if fresh is not None:
        on_fresh = on & fresh.to(mask.device).unsqueeze(1)
        stats.fresh_tokens = int(on_fresh.sum().item())
        trainer = old_logp if correction == "decoupled" else logp.detach()  # before this batch's steps
        stats.mismatch_sum = float((trainer - behaviour_logp).abs()[on_fresh].sum().item())
    return loss, stats


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, aggregation: Aggregation,
               denominator: float | None) -> torch.Tensor:
    if aggregation == "token_mean":
        total = (per_token * mask).sum()
        default = mask.sum().item()
    elif aggregation == "sequence_mean":
        lengths = mask.sum(dim=1).clamp(min=1.0)
        total = ((per_token * mask).sum(dim=1) / lengths).sum()
        default = float(mask.shape[0])
    else:
        raise ValueError(f"aggregation must be 'token_mean' or 'sequence_mean', got {aggregation!r}")
    denom = default if denominator is None else denominator
    return total / max(denom, 1.0)


def _token_stats(ratio: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, clip_low: float,
                 clip_high: float, kl: torch.Tensor | None) -> LossStats:
    on = mask > 0
    # Clipped = the min picked the clipped term and it differs: no gradient reaches the token.
    at_clip = ((adv > 0) & (ratio > 1.0 + clip_high)) | ((adv < 0) & (ratio < 1.0 - clip_low))
    tokens = int(on.sum().item())
    return LossStats(
        tokens=tokens,
        ratio_sum=float(ratio[on].sum().item()) if tokens else 0.0,
        ratio_min=float(ratio[on].min().item()) if tokens else math.inf,
        ratio_max=float(ratio[on].max().item()) if tokens else 0.0,
        clipped_tokens=int((at_clip & on).sum().item()),
        kl_sum=float(kl.detach()[on].sum().item()) if kl is not None and tokens else 0.0,
    )


# ---------------------------------------------------------------- learning-rate schedule


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: Schedule) -> float:
    """Multiplier of the base learning rate for optimizer step `step` (0-based).

    Warm-up rises linearly to 1 over `warmup_steps`, starting at 1/warmup_steps (not 0, so the
    first step is not wasted);
    then `constant` stays at 1, `linear` and `cosine` decay towards 0 at `total_steps`.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"lr schedule must be constant, linear or cosine, got {schedule!r}")
