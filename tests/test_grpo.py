"""GRPO maths on hand-made numbers: advantages, ratio and clipping, aggregation, schedule."""

from __future__ import annotations

import math

import pytest
import torch

from jobrl_async.learning.grpo import (
    STD_EPS,
    LossStats,
    group_stats,
    importance_weight,
    loss_denominator,
    lr_factor,
    policy_loss,
)

# ---------------------------------------------------------------- advantages


def group_advantages(rewards: list[float], scale: str = "group") -> list[float] | None:
    adv = group_stats(rewards, scale).advantages  # type: ignore[arg-type]
    return list(adv) if adv is not None else None


def test_advantages_centre_on_the_group_mean_without_scaling() -> None:
    assert group_advantages([1.0, 2.0, 6.0], "none") == pytest.approx([-2.0, -1.0, 3.0])


def test_advantages_scaled_by_the_sample_std() -> None:
    # mean 2, sample std 1 -> (r - 2) / (1 + eps)
    adv = group_advantages([1.0, 2.0, 3.0], "group")
    assert adv == pytest.approx([-1 / (1 + STD_EPS), 0.0, 1 / (1 + STD_EPS)])
    rewards = [9.2, 4.0, 7.5, 7.5, 0.0]
    adv = group_advantages(rewards, "group")
    assert sum(adv) == pytest.approx(0.0, abs=1e-9)
    assert torch.tensor(adv).std().item() == pytest.approx(1.0, abs=1e-3)


def test_zero_variance_group_has_no_signal() -> None:
    stats = group_stats([7.0, 7.0, 7.0], "group")
    assert stats.advantages is None and stats.zero_variance
    assert stats.mean == 7.0 and stats.std == 0.0
    assert group_advantages([5.0, 5.0 + 1e-9], "none") is None  # equal within tolerance


def test_single_member_and_empty_groups_have_no_signal_but_are_not_zero_variance() -> None:
    single = group_stats([9.0], "group")
    assert single.advantages is None and not single.zero_variance and single.size == 1
    assert group_advantages([], "group") is None


def test_two_member_group_splits_plus_minus() -> None:
    assert group_advantages([0.0, 10.0], "none") == pytest.approx([-5.0, 5.0])
    # sample std of (0, 10) is 7.07: advantages +-0.707
    assert group_advantages([0.0, 10.0], "group") == pytest.approx([-0.7071, 0.7071], abs=1e-3)


def test_bad_rewards_and_scale_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        group_advantages([1.0, math.nan], "group")
    with pytest.raises(ValueError, match="scale"):
        group_advantages([1.0, 2.0], "batch")  # type: ignore[arg-type]


# ---------------------------------------------------------------- ratio and clipping


def _one_token(ratio: float, advantage: float, clip_low: float = 0.2, clip_high: float = 0.28):
    """Loss, gradient w.r.t. logp, and stats of a single token with the given ratio."""
    behaviour = torch.tensor([[-2.0]])
    logp = (behaviour + math.log(ratio)).clone().requires_grad_(True)
    loss, stats = policy_loss(logp, behaviour, torch.tensor([advantage]), torch.ones(1, 1),
                              clip_low, clip_high)
    loss.backward()
    return loss.item(), logp.grad.item(), stats


def test_ratio_one_is_plain_policy_gradient() -> None:
    loss, grad, stats = _one_token(1.0, 2.0)
    assert loss == pytest.approx(-2.0)
    assert grad == pytest.approx(-2.0)  # d(-ρA)/dlogp = -ρA
    assert stats.ratio_mean == pytest.approx(1.0) and stats.clipped_fraction == 0.0


def test_positive_advantage_is_clipped_above_one_plus_eps_high_only() -> None:
    loss, grad, stats = _one_token(1.5, 1.0)  # above 1 + 0.28: the clip caps the gain
    assert loss == pytest.approx(-1.28) and grad == 0.0 and stats.clipped_tokens == 1
    loss, grad, stats = _one_token(1.2, 1.0)  # inside clip-higher's room (would clip at 0.2)
    assert loss == pytest.approx(-1.2) and grad == pytest.approx(-1.2) and stats.clipped_tokens == 0
    loss, grad, stats = _one_token(0.5, 1.0)  # below 1 - eps: no clip, still pushed up
    assert loss == pytest.approx(-0.5) and grad == pytest.approx(-0.5) and stats.clipped_tokens == 0


def test_negative_advantage_is_clipped_below_one_minus_eps_low_only() -> None:
    loss, grad, stats = _one_token(0.5, -1.0)  # already pushed down past 1 - 0.2: stop
    assert loss == pytest.approx(0.8) and grad == 0.0 and stats.clipped_tokens == 1
    loss, grad, stats = _one_token(1.5, -1.0)  # grew although bad: full (unclipped) penalty
    assert loss == pytest.approx(1.5) and grad == pytest.approx(1.5) and stats.clipped_tokens == 0


def test_ratio_stats_over_masked_tokens() -> None:
    behaviour = torch.zeros(2, 3)
    logp = torch.log(torch.tensor([[1.0, 2.0, 1.0], [0.5, 50.0, 50.0]]))
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])  # the 50s are padding
    _, stats = policy_loss(logp, behaviour, torch.tensor([1.0, 1.0]), mask, 0.2, 0.28)
    assert stats.tokens == 4
    assert stats.ratio_mean == pytest.approx((1 + 2 + 1 + 0.5) / 4)
    assert stats.ratio_max == pytest.approx(2.0) and stats.ratio_min == pytest.approx(0.5)
    assert stats.clipped_fraction == pytest.approx(1 / 4)


def test_huge_stale_log_ratio_stays_finite() -> None:
    behaviour = torch.tensor([[-80.0, -1.0]])
    logp = torch.tensor([[-0.1, -1.0]], requires_grad=True)
    loss, stats = policy_loss(logp, behaviour, torch.tensor([-1.0]), torch.ones(1, 2), 0.2, 0.28)
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(logp.grad).all()
    assert math.isfinite(stats.ratio_max)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="shapes"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3), 0.2, 0.2)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3), 0.2, 0.2)


# ---------------------------------------------------------------- aggregation


def _two_unequal() -> tuple[torch.Tensor, ...]:
    """A 1-token completion with advantage +1 and a 3-token one with advantage -1, ratio 1."""
    logp = torch.full((2, 3), -1.0)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    return logp, logp.clone(), torch.tensor([1.0, -1.0]), mask


def test_token_mean_weighs_every_token_the_same() -> None:
    logp, behaviour, adv, mask = _two_unequal()
    loss, _ = policy_loss(logp, behaviour, adv, mask, 0.2, 0.28, "token_mean")
    # (-1 * 1 token + 1 * 3 tokens) / 4 tokens: the long completion dominates
    assert loss.item() == pytest.approx(0.5)


def test_sequence_mean_weighs_every_trajectory_the_same() -> None:
    logp, behaviour, adv, mask = _two_unequal()
    loss, _ = policy_loss(logp, behaviour, adv, mask, 0.2, 0.28, "sequence_mean")
    # (-1/1 + 3/3) / 2: the two trajectories cancel, whatever their lengths
    assert loss.item() == pytest.approx(0.0)


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_micro_batches_with_the_step_denominator_sum_to_the_full_batch(aggregation: str) -> None:
    torch.manual_seed(0)
    logp = torch.randn(4, 5) - 2.0
    behaviour = logp.detach() + 0.3 * torch.randn(4, 5)
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]])

    full_logp = logp.clone().requires_grad_(True)
    full, full_stats = policy_loss(full_logp, behaviour, adv, mask, 0.2, 0.28, aggregation)
    full.backward()

    parts_logp = logp.clone().requires_grad_(True)
    denom = loss_denominator(mask.sum(dim=1).tolist(), aggregation)  # type: ignore[arg-type]
    total, stats = 0.0, LossStats()
    for rows in (slice(0, 1), slice(1, 4)):
        part, s = policy_loss(parts_logp[rows], behaviour[rows], adv[rows], mask[rows], 0.2, 0.28,
                              aggregation, denominator=denom)
        part.backward()
        total, stats = total + part.item(), stats.merge(s)
    assert total == pytest.approx(full.item(), abs=1e-6)
    assert torch.allclose(parts_logp.grad, full_logp.grad, atol=1e-7)
    assert stats.tokens == full_stats.tokens == 11
    assert stats.ratio_mean == pytest.approx(full_stats.ratio_mean)
    assert stats.ratio_max == pytest.approx(full_stats.ratio_max)
    assert stats.ratio_min == pytest.approx(full_stats.ratio_min)


def test_loss_denominator() -> None:
    assert loss_denominator([1, 3, 6], "token_mean") == 10.0
    assert loss_denominator([1, 3, 6], "sequence_mean") == 3.0
    with pytest.raises(ValueError, match="aggregation"):
        loss_denominator([1], "sum")  # type: ignore[arg-type]


# ---------------------------------------------------------------- KL


def test_kl_k3_is_zero_at_the_reference_and_positive_away_from_it() -> None:
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    behaviour = logp.detach().clone()
    zero_adv = torch.tensor([0.0])
    loss, stats = policy_loss(logp, behaviour, zero_adv, torch.ones(1, 2), 0.2, 0.28,
                              ref_logp=logp.detach().clone(), beta=0.1)
    assert loss.item() == pytest.approx(0.0) and stats.kl_mean == pytest.approx(0.0)

    ref = torch.tensor([[-1.5, -1.0]])
    loss, stats = policy_loss(logp, behaviour, zero_adv, torch.ones(1, 2), 0.2, 0.28,
                              ref_logp=ref, beta=0.1)
    d = torch.tensor([-0.5, 1.0])
    expected = (torch.exp(d) - d - 1).mean().item()
    assert stats.kl_mean == pytest.approx(expected) and expected > 0
    assert loss.item() == pytest.approx(0.1 * expected)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, behaviour, zero_adv, torch.ones(1, 2), 0.2, 0.28, beta=0.1)


# ---------------------------------------------------------------- schedule


def test_lr_schedules() -> None:
    kw = {"warmup_steps": 4, "total_steps": 14}
    assert [lr_factor(s, schedule="constant", **kw) for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    assert lr_factor(4, schedule="linear", **kw) == 1.0
    assert lr_factor(9, schedule="linear", **kw) == pytest.approx(0.5)
    assert lr_factor(9, schedule="cosine", **kw) == pytest.approx(0.5)
    assert lr_factor(13, schedule="cosine", **kw) > 0.0  # the last step still learns
    assert lr_factor(50, schedule="linear", **kw) == 0.0
    assert lr_factor(0, schedule="constant", warmup_steps=0, total_steps=1) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(5, schedule="step", **kw)  # type: ignore[arg-type]


def test_behaviour_mode_tis_cap_truncates_large_ratios_on_negative_advantages() -> None:
    behaviour = torch.log(torch.tensor([[0.1, 0.1, 0.1]]))
    logp = torch.log(torch.tensor([[0.5, 0.15, 0.1]])).requires_grad_()  # ratios 5, 1.5, 1
    mask = torch.ones(1, 3)
    neg = torch.tensor([-1.0])
    loss, stats = policy_loss(logp, behaviour, neg, mask, 0.2, 0.28, "token_mean", tis_cap=2.0)
    loss.backward()
    assert stats.capped_tokens == 1 and stats.capped_fraction == pytest.approx(1 / 3)
    assert logp.grad[0, 0] == 0.0  # the capped token gets no gradient
    assert logp.grad[0, 1] != 0.0
    assert loss.item() == pytest.approx((2.0 + 1.5 + 1.0) / 3)  # -cap x A for the capped token
    uncapped, stats0 = policy_loss(logp.detach(), behaviour, neg, mask, 0.2, 0.28, "token_mean")
    assert uncapped.item() == pytest.approx((5.0 + 1.5 + 1.0) / 3) and stats0.capped_tokens == 0
    pos, stats_pos = policy_loss(logp.detach(), behaviour, torch.tensor([1.0]), mask, 0.2, 0.28,
                                 "token_mean", tis_cap=2.0)
    assert stats_pos.capped_tokens == 0  # a positive advantage is already bounded by the clip


def test_mismatch_is_measured_on_fresh_sequences_only() -> None:
    logp = torch.tensor([[-1.0, -2.0], [-1.0, -2.0]])
    behaviour = torch.tensor([[-1.1, -2.0], [-3.0, -3.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    _, stats = policy_loss(logp, behaviour, torch.tensor([1.0, 1.0]), mask, 0.2, 0.28,
                           fresh=torch.tensor([True, False]))
    assert stats.fresh_tokens == 2
    assert stats.logprob_mismatch == pytest.approx(0.05)
    _, none = policy_loss(logp, behaviour, torch.tensor([1.0, 1.0]), mask, 0.2, 0.28,
                          fresh=torch.tensor([False, False]))
    assert none.logprob_mismatch is None


# ---------------------------------------------------------------- decoupled correction


def test_decoupled_ratio_is_one_and_the_gradient_is_the_weighted_policy_gradient() -> None:
    behaviour = torch.log(torch.tensor([[0.1, 0.2, 0.4]]))
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.1]])).requires_grad_()  # sampler ratios 5, 1, 0.25
    mask = torch.ones(1, 3)
    adv = torch.tensor([2.0])
    loss, stats = policy_loss(logp, behaviour, adv, mask, 0.2, 0.28, "token_mean",
                              correction="decoupled", tis_cap=2.0)
    loss.backward()
    assert stats.ratio_min == stats.ratio_max == 1.0 and stats.clipped_tokens == 0
    weights = [2.0, 1.0, 0.25]  # min(exp(logp_old - behaviour), 2): the first one capped
    assert logp.grad[0].tolist() == pytest.approx([-w * 2.0 / 3 for w in weights])
    assert loss.item() == pytest.approx(-sum(w * 2.0 for w in weights) / 3)
    assert stats.weight_mean == pytest.approx(sum(weights) / 3)
    assert stats.capped_tokens == 1 and stats.capped_fraction == pytest.approx(1 / 3)
    _, behaviour_stats = policy_loss(logp.detach(), behaviour, adv, mask, 0.2, 0.28, "token_mean", tis_cap=2.0)
    assert behaviour_stats.ratio_max == pytest.approx(5.0) and behaviour_stats.weight_mean is None


@pytest.mark.parametrize("shift", [-0.7, -0.05, 0.0, 0.3, 1.5])
def test_importance_weight_is_the_capped_exponential_of_a_known_shift(shift: float) -> None:
    old = torch.tensor([[-1.0, -2.5, -0.3]])
    weight = importance_weight(old, old - shift, cap=2.0)
    assert weight.values.tolist()[0] == pytest.approx([min(math.exp(shift), 2.0)] * 3)
    assert bool(weight.capped.all()) == (math.exp(shift) > 2.0)
    assert importance_weight(old, old - shift, cap=0.0).values.tolist()[0] == pytest.approx([math.exp(shift)] * 3)


def test_importance_weight_of_a_huge_shift_stays_finite() -> None:
    old = torch.tensor([[-0.1]])
    assert importance_weight(old, torch.tensor([[-90.0]]), cap=0.0).values.isfinite().all()
    assert importance_weight(old, torch.tensor([[-90.0]]), cap=2.0).values.item() == pytest.approx(2.0)


def test_importance_weight_times_the_decoupled_ratio_is_the_full_ratio_below_the_cap() -> None:
    # The identity the decoupled loss relies on: w · ρ = π_θ / π_behaviour when w is not capped.
    theta, old, behaviour = torch.tensor([[-0.9]]), torch.tensor([[-1.0]]), torch.tensor([[-1.2]])
    weight = importance_weight(old, behaviour, cap=10.0)
    assert (weight.values * torch.exp(theta - old)).item() == pytest.approx(math.exp(-0.9 + 1.2))
    assert not weight.values.requires_grad
