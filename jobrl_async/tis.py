"""Off-policy numerics when another engine samples: the log-prob mismatch and TIS weights.

A remote engine (vLLM: other kernels, other precision, batch-dependent reductions) gives the
sampled tokens slightly different log-probs than the trainer computes for the same weights.
The clipped PPO ratio against the engine's log-probs would then clip on numerical noise, so
truncated importance sampling (TIS, Yao et al. 2025, "Your efficient RL framework secretly
brings you off-policy RL training") separates the two:

    w_t = min(exp(logπ_trainer,old(y_t) - logπ_engine(y_t)), C)      no gradient
    l_t = -w_t · min(ρ_t A, clip(ρ_t, 1 - ε_low, 1 + ε_high) A),  ρ_t = exp(logπ_θ - logπ_trainer,old)

where `logπ_trainer,old` are the trainer's log-probs under the weights that sampled (the
policy version the trajectory records). The cap C bounds the variance a rare token the
engine under-weighted could add. Pure functions of tensors: tested on hand-made numbers.
"""

from __future__ import annotations

import torch

LOG_WEIGHT_FLOOR = -30.0  # exp(-30) ~ 1e-13: below that a weight is zero for every purpose


def logprob_mismatch(engine_logps: torch.Tensor, trainer_logps: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean |logp_engine - logp_trainer| over completion tokens (`mask` 1); 0.0 when there are none."""
    if engine_logps.shape != trainer_logps.shape or engine_logps.shape != mask.shape:
        raise ValueError(f"shapes differ: engine {tuple(engine_logps.shape)}, trainer "
                         f"{tuple(trainer_logps.shape)}, mask {tuple(mask.shape)}")
    on = mask.to(torch.bool)
    if not bool(on.any()):
        return 0.0
    diff = (engine_logps.detach().double() - trainer_logps.detach().double()).abs()
    return float(diff[on].mean().item())


def truncated_importance_weights(
    logp_trainer_at_sampling: torch.Tensor, logp_engine: torch.Tensor, cap: float
) -> torch.Tensor:
    """TIS weights min(exp(logp_trainer - logp_engine), cap), elementwise, without gradient.

    `cap` > 0; padding positions get a weight too (the loss's mask removes them).
    """
    if cap <= 0:
        raise ValueError(f"the TIS cap must be > 0, got {cap}")
    if logp_trainer_at_sampling.shape != logp_engine.shape:
        raise ValueError(f"shapes differ: trainer {tuple(logp_trainer_at_sampling.shape)}, "
                         f"engine {tuple(logp_engine.shape)}")
    log_w = (logp_trainer_at_sampling.detach() - logp_engine.detach().to(logp_trainer_at_sampling.dtype))
    # Clamp in log space first: exp of a large difference would overflow to inf before the cap.
    log_w = log_w.clamp(min=LOG_WEIGHT_FLOOR, max=float(torch.log(torch.tensor(cap, dtype=torch.float64))))
    return torch.exp(log_w)


def capped_fraction(weights: torch.Tensor, mask: torch.Tensor, cap: float) -> float:
    """Share of completion tokens whose TIS weight hit the cap (a per-step health metric)."""
    on = mask.to(torch.bool)
    if not bool(on.any()):
        return 0.0
    return float((weights[on] >= cap * (1 - 1e-6)).double().mean().item())
