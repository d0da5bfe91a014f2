"""The learner: batch preparation (pure), then real steps on the embedded tiny model."""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import replace
from typing import Callable

import pytest
import torch

from jobrl_async.cli import main
from jobrl_async.config import Config, TrainingConfig
from jobrl_async.data import load_bundled
from jobrl_async.flow.records import Context, Group, ScoredTrajectory, Trajectory, Verdict
from jobrl_async.generation.generator import LocalGenerator, SampleRequest
from jobrl_async.learning.learner import Learner, StepMetrics, prepare_batch
from jobrl_async.ops import log
from jobrl_async.policy.device import Device

CONTEXT = Context(job_title="Data Scientist", language="en", skills=("Python", "SQL", "Git"))


def _member(reward: float | None, *, attempt: int = 0, outcome: str = "scored",
            truncated: bool = False, version: int = 0, n_tokens: int = 3) -> ScoredTrajectory:
    traj = Trajectory(
        context=CONTEXT, split="train", step=0, group=0, attempt=attempt,
        prompt_ids=(1, 2, 3), completion_ids=tuple(range(10, 10 + n_tokens)),
        completion_text="x", logprobs=(-1.0,) * n_tokens, truncated=truncated,
        policy_version=version,
    )
    if outcome == "scored":
        return ScoredTrajectory(traj, "scored", Verdict(criteria={}, reward=float(reward)))
    return ScoredTrajectory(traj, outcome, reason="judge timed out")  # type: ignore[arg-type]


def _group(index: int, members: list[ScoredTrajectory]) -> Group:
    return Group(step=0, index=index, context=CONTEXT, members=members)


def test_prepare_counts_no_signal_groups_and_keeps_the_rest() -> None:
    groups = [
        _group(0, [_member(r, attempt=i) for i, r in enumerate([1.0, 5.0, 9.0])]),
        _group(1, [_member(7.0, attempt=i) for i in range(3)]),  # zero variance
        _group(2, [_member(8.0), _member(None, attempt=1, outcome="judge_failed")]),  # one scored
        _group(3, [_member(None, attempt=i, outcome="dropped") for i in range(2)]),  # none scored
    ]
    batch = prepare_batch(groups, TrainingConfig(scale_rewards="none"))
    assert batch.groups == 4
    assert batch.zero_variance_groups == 1 and batch.small_groups == 2 and batch.skipped_groups == 3
    assert batch.excluded == 3  # judge_failed and dropped never enter
    assert [s.advantage for s in batch.samples] == pytest.approx([-4.0, 0.0, 4.0])
    assert batch.rewards == [1.0, 5.0, 9.0, 7.0, 7.0, 7.0, 8.0]  # every scored reward, for stats


def test_judge_failed_members_do_not_shift_the_baseline() -> None:
    members = [_member(2.0), _member(None, attempt=1, outcome="judge_failed"), _member(4.0, attempt=2)]
    batch = prepare_batch([_group(0, members)], TrainingConfig(scale_rewards="none"))
    assert [s.advantage for s in batch.samples] == pytest.approx([-1.0, 1.0])


def test_truncated_rule_keep_versus_mask() -> None:
    members = [_member(0.0, truncated=True), _member(6.0, attempt=1), _member(9.0, attempt=2)]
    kept = prepare_batch([_group(0, members)], TrainingConfig(scale_rewards="none", truncated="keep"))
    assert [s.advantage for s in kept.samples] == pytest.approx([-5.0, 1.0, 4.0])
    masked = prepare_batch([_group(0, members)], TrainingConfig(scale_rewards="none", truncated="mask"))
    # The truncated offer leaves the loss but still counts in its group's baseline (mean 5).
    assert [s.advantage for s in masked.samples] == pytest.approx([1.0, 4.0])
    assert masked.masked_truncated == 1 and kept.masked_truncated == 0


def test_members_with_non_finite_behaviour_logprobs_leave_the_loss_but_not_the_baseline() -> None:
    bad = replace(_member(0.0), trajectory=replace(_member(0.0).trajectory, logprobs=(-1.0, math.nan, -2.0)))
    members = [bad, _member(4.0, attempt=1), _member(8.0, attempt=2)]
    batch = prepare_batch([_group(0, members)], TrainingConfig(scale_rewards="none"))
    assert batch.bad_logprobs == 1
    assert [s.advantage for s in batch.samples] == pytest.approx([0.0, 4.0])


def test_samples_carry_behaviour_logprobs_and_versions() -> None:
    members = [_member(1.0, version=3, n_tokens=2), _member(2.0, attempt=1, version=4, n_tokens=5)]
    batch = prepare_batch([_group(0, members)], TrainingConfig())
    assert [len(s.behaviour_logprobs) for s in batch.samples] == [2, 5]
    assert [s.policy_version for s in batch.samples] == [3, 4]
    assert batch.versions == [3, 4]


# ---------------------------------------------------------------- real steps on the tiny model


def _groups_from(trajectories: list[Trajectory], reward: Callable[[Trajectory], float]) -> list[Group]:
    groups: dict[int, Group] = {}
    for t in trajectories:
        group = groups.setdefault(t.group, Group(step=t.step, index=t.group, context=t.context))
        group.members.append(ScoredTrajectory(t, "scored", Verdict(criteria={}, reward=reward(t))))
    return list(groups.values())


async def _sampled_groups(policy, cfg: Config, device: Device, step: int = 0, n_groups: int = 2,
                          attempts: int = 4, reward: Callable[[Trajectory], float] | None = None,
                          ) -> list[Group]:
    contexts = load_bundled()
    requests = [SampleRequest(contexts[(step * n_groups + g) * 7 % len(contexts)], "train", step, g,
                              attempts) for g in range(n_groups)]
    trajectories = await LocalGenerator(policy, device, cfg.generation).generate(requests)
    return _groups_from(trajectories, reward or (lambda t: float(t.attempt)))  # always varied


def _lora(policy) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}


def _base(policy) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in policy.model.named_parameters() if not p.requires_grad}


@pytest.fixture
def short_config(tiny_config: Config) -> Config:
    tiny_config.generation.max_new_tokens = 16
    tiny_config.training.learning_rate = 1e-3
    return tiny_config


@pytest.mark.parametrize("correction", ["decoupled", "behaviour"])
async def test_ratio_is_one_on_the_step_that_sampled_with_the_current_policy(
    tiny_policy, short_config: Config, correction: str
) -> None:
    short_config.training.off_policy_correction = correction  # type: ignore[assignment]
    device = Device("cpu")
    learner = Learner(tiny_policy, device, short_config.training, total_steps=4)
    groups = await _sampled_groups(tiny_policy, short_config, device)
    metrics = await learner.step(groups)
    assert metrics.stepped and metrics.version == 1 == tiny_policy.version
    assert metrics.ratio_min == pytest.approx(1.0, abs=1e-5)
    assert metrics.ratio_max == pytest.approx(1.0, abs=1e-5)
    assert metrics.clipped_fraction == 0.0
    assert metrics.policy_lag_mean == 0.0 and metrics.policy_lag_max == 0
    assert metrics.trajectories == 8 and metrics.tokens == sum(
        len(m.trajectory.completion_ids) for g in groups for m in g.members)

    # The same trajectories one optimizer step later: now one version stale, and corrected:
    # by the PPO ratio (behaviour), or by the importance weight with the ratio still 1 (decoupled).
    stale = await learner.step(groups)
    assert stale.policy_lag_max == 1 and stale.version == 2
    ratio_moved = abs(stale.ratio_max - 1.0) > 1e-4 or abs(stale.ratio_min - 1.0) > 1e-4
    if correction == "behaviour":
        assert ratio_moved and stale.tis_weight_mean is None
    else:
        assert not ratio_moved and abs(stale.tis_weight_mean - 1.0) > 1e-4


async def test_minibatches_give_the_clip_a_trust_region(tiny_policy, short_config: Config) -> None:
    """One optimizer step per batch: ρ = 1 and the clip never fires. Four minibatches: π_old
    comes from a pass before the first step, so the later ones see ρ != 1 and the clip bounds them."""
    device = Device("cpu")
    short_config.training.learning_rate = 0.05  # large steps: the policy moves past the clip
    groups = await _sampled_groups(tiny_policy, short_config, device, n_groups=2, attempts=8)
    lora = _lora(tiny_policy)
    one = await Learner(tiny_policy, device, short_config.training, total_steps=4).step(groups)
    assert one.ratio_max == pytest.approx(1.0, abs=1e-5) and one.clipped_fraction == 0.0

    with torch.no_grad():  # the same start for the K-step run
        for name, p in tiny_policy.model.named_parameters():
            if name in lora:
                p.copy_(lora[name])
    tiny_policy.version = 0
    short_config.training.minibatches = 4
    learner = Learner(tiny_policy, device, short_config.training, total_steps=4)
    many = await learner.step(groups)
    assert many.stepped and learner.optimizer_steps == 4
    assert tiny_policy.version == many.version == 1  # the version counts batches
    assert abs(many.ratio_max - 1.0) > 1e-3 or abs(many.ratio_min - 1.0) > 1e-3
    assert many.clipped_fraction > 0.0
    assert many.tokens == one.tokens  # every sample in exactly one minibatch
    assert learner.scheduler.last_epoch == 1  # the LR schedule counts batches too


def test_minibatches_split_every_sample_once_across_groups() -> None:
    from jobrl_async.learning.learner import minibatches

    parts = minibatches(10, 3)
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert minibatches(2, 4) == [[0], [1]]  # never an empty optimizer step
    assert minibatches(5, 1) == [[0, 1, 2, 3, 4]]


async def test_in_bf16_the_decoupled_ratio_stays_one_where_the_behaviour_ratio_does_not(
    tiny_config: Config
) -> None:
    """bf16: the sampler's and the trainer's kernels disagree on log-probs; only the decoupled
    loss keeps that numerical noise out of the PPO ratio (it goes into the weight instead)."""
    from jobrl_async.policy.model import load_policy

    tiny_config.model.dtype = "bfloat16"
    tiny_config.generation.max_new_tokens = 48
    tiny_config.training.learning_rate = 1e-3
    results = {}
    for correction in ("decoupled", "behaviour"):
        tiny_config.training.off_policy_correction = correction  # type: ignore[assignment]
        policy = load_policy(tiny_config)
        device = Device("cpu")
        learner = Learner(policy, device, tiny_config.training, total_steps=4)
        groups = await _sampled_groups(policy, tiny_config, device, n_groups=4)
        results[correction] = await learner.step(groups)  # on-policy: sampled by these weights
    decoupled, behaviour = results["decoupled"], results["behaviour"]
    assert decoupled.policy_lag_max == behaviour.policy_lag_max == 0
    assert abs(decoupled.ratio_max - 1.0) <= 1e-6 and abs(decoupled.ratio_min - 1.0) <= 1e-6
    assert decoupled.clipped_fraction == 0.0
    # the noise is real, and the weight w = exp(logp_old - logp_sampler) of every token carries
    # it (its mean may land near 1: the per-token noise has both signs)
    assert decoupled.logprob_mismatch > 1e-4 and decoupled.tis_weight_mean is not None
    assert behaviour.tis_weight_mean is None  # the behaviour loss has no weight: the ratio carries it
    assert max(abs(behaviour.ratio_max - 1.0), abs(behaviour.ratio_min - 1.0)) > 1e-3  # in the ratio


async def test_a_step_changes_only_the_lora_weights(tiny_policy, short_config: Config) -> None:
    device = Device("cpu")
    learner = Learner(tiny_policy, device, short_config.training, total_steps=4)
    groups = await _sampled_groups(tiny_policy, short_config, device)
    lora, base = _lora(tiny_policy), _base(tiny_policy)
    assert all("lora_" in name for name in lora)
    jobs = device.jobs
    metrics = await learner.step(groups)
    assert device.jobs == jobs + 1  # one device job, through the shared lock
    assert metrics.grad_norm is not None and metrics.grad_norm > 0
    assert all(torch.equal(p, base[n]) for n, p in _base(tiny_policy).items())
    changed = [n for n, p in _lora(tiny_policy).items() if not torch.equal(p, lora[n])]
    assert changed and any("lora_B" in n for n in changed)


async def test_a_step_without_signal_does_no_work_and_keeps_the_version(
    tiny_policy, short_config: Config
) -> None:
    device = Device("cpu")
    learner = Learner(tiny_policy, device, short_config.training, total_steps=4)
    groups = await _sampled_groups(tiny_policy, short_config, device, reward=lambda t: 5.0)
    lora, jobs = _lora(tiny_policy), device.jobs
    metrics = await learner.step(groups)
    assert not metrics.stepped and metrics.skip_reason == "no_signal"
    assert metrics.version == 0 == tiny_policy.version and learner.optimizer_steps == 0
    assert metrics.skipped_groups == 2 and metrics.zero_variance_share == 1.0
    assert metrics.trajectories == 0 and metrics.loss is None and metrics.reward_mean == 5.0
    assert device.jobs == jobs
    assert all(torch.equal(p, lora[n]) for n, p in _lora(tiny_policy).items())


async def test_a_non_finite_step_is_refused_without_touching_the_weights(
    tiny_policy, short_config: Config
) -> None:
    device = Device("cpu")
    learner = Learner(tiny_policy, device, short_config.training, total_steps=4)
    groups = await _sampled_groups(tiny_policy, short_config, device)
    with torch.no_grad():  # a weight gone bad: every forward pass is NaN from now on
        learner.params[1].view(-1)[0] = math.nan
    lora = _lora(tiny_policy)
    metrics = await learner.step(groups)
    assert not metrics.stepped and metrics.skip_reason == "non_finite"
    assert tiny_policy.version == 0 and learner.optimizer_steps == 0
    assert all(torch.allclose(p, lora[n], equal_nan=True) for n, p in _lora(tiny_policy).items())
    assert all(p.grad is None for p in learner.params)


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
async def test_micro_batches_accumulate_the_full_batch_gradient(
    tiny_policy, short_config: Config, aggregation: str
) -> None:
    device = Device("cpu")
    short_config.training.loss_aggregation = aggregation  # type: ignore[assignment]
    groups = await _sampled_groups(tiny_policy, short_config, device, n_groups=2, attempts=5)
    grads = []
    for size in (10, 3):
        short_config.training.micro_batch_size = size
        learner = Learner(tiny_policy, device, short_config.training, total_steps=4)
        loss, stats = learner.accumulate_gradients(learner.prepare(groups).samples)
        grads.append((loss, stats.tokens, [p.grad.clone() for p in learner.params]))
    (loss_a, tokens_a, grad_a), (loss_b, tokens_b, grad_b) = grads
    assert loss_a == pytest.approx(loss_b, abs=1e-6) and tokens_a == tokens_b
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(grad_a, grad_b))
    assert any(a.abs().sum() > 0 for a in grad_a)


async def test_kl_to_the_base_model_starts_at_zero_and_grows(tiny_policy, short_config: Config) -> None:
    short_config.training.beta = 0.05
    short_config.training.learning_rate = 5e-3
    device = Device("cpu")
    learner = Learner(tiny_policy, device, short_config.training, total_steps=4)
    groups = await _sampled_groups(tiny_policy, short_config, device)
    first = await learner.step(groups)  # LoRA B = 0: the policy is the base model
    assert first.kl == pytest.approx(0.0, abs=1e-6)
    second = await learner.step(groups)
    assert second.kl is not None and second.kl > 1e-6


async def test_schedule_and_state_round_trip(tiny_policy, short_config: Config, tmp_path) -> None:
    short_config.training.warmup_steps = 2
    short_config.training.lr_schedule = "linear"
    device = Device("cpu")
    learner = Learner(tiny_policy, device, short_config.training, total_steps=6)
    groups = await _sampled_groups(tiny_policy, short_config, device)
    lrs = [(await learner.step(groups)).lr for _ in range(3)]
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3])  # warm-up 1/2, 2/2, then the decay starts

    # What a checkpoint stores, through the file format a resume reads (weights_only).
    torch.save(learner.state_dict(), tmp_path / "learner_state.pt")
    state = torch.load(tmp_path / "learner_state.pt", weights_only=True)
    tiny_policy.version = 0
    resumed = Learner(tiny_policy, device, short_config.training, total_steps=6)
    resumed.load_state_dict(state)
    assert tiny_policy.version == 3 and resumed.optimizer_steps == 3
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(learner.optimizer.param_groups[0]["lr"])
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 1 / 4))
    ours, theirs = learner.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k]["exp_avg"], theirs[k]["exp_avg"]) for k in ours)


async def test_every_step_logs_one_learner_step_event(tiny_policy, short_config: Config) -> None:
    buf = io.BytesIO()
    log.configure("json", "info", stream=buf)
    device = Device("cpu")
    learner = Learner(tiny_policy, device, short_config.training, total_steps=4)
    groups = await _sampled_groups(tiny_policy, short_config, device)
    await learner.step(groups)
    await learner.step(await _sampled_groups(tiny_policy, short_config, device, reward=lambda t: 1.0))
    events = [e for e in map(json.loads, buf.getvalue().splitlines()) if e["event"] == "learner_step"]
    assert [e["stepped"] for e in events] == [True, False]
    for key in ("loss", "reward_mean", "reward_std", "zero_variance_share", "ratio_mean", "ratio_max",
                "clipped_fraction", "grad_norm", "tokens", "step_time_s", "policy_lag_mean", "lr"):
        assert key in events[0], key
    assert events[0]["stage"] == "learner" and events[0]["level"] == "info"


# ---------------------------------------------------------------- it learns


def _joins(t: Trajectory) -> float:
    """A cheap deterministic reward: the overview opens with the "Join us" template (~15% at start)."""
    return 10.0 if re.search(r"<overview>(Join us|Rejoignez)", t.completion_text) else 0.0


async def _train(policy, cfg: Config, steps: int, stale: bool) -> list[StepMetrics]:
    """`steps` learner steps on fresh samples; `stale`: each batch was sampled one version earlier
    (the pipeline with max_policy_lag = 1), so the learner must correct for the lag."""
    device = Device("cpu")
    learner = Learner(policy, device, cfg.training, total_steps=steps)
    history: list[StepMetrics] = []
    pending = await _sampled_groups(policy, cfg, device, 0, n_groups=4, attempts=8, reward=_joins)
    for step in range(steps):
        fresh = await _sampled_groups(policy, cfg, device, step + 1, n_groups=4, attempts=8, reward=_joins)
        history.append(await learner.step(pending if stale else fresh))
        pending = fresh
    return history


def _start_end(history: list[StepMetrics]) -> tuple[float, float]:
    rewards = [m.reward_mean for m in history]
    return sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3


@pytest.fixture
def learning_config(tiny_config: Config) -> Config:
    tiny_config.generation.max_new_tokens = 28  # enough to reach the overview's first words
    tiny_config.generation.batch_size = 32
    tiny_config.training.learning_rate = 5e-3  # far above the default: a few dozen steps, not hundreds
    tiny_config.training.micro_batch_size = 16
    return tiny_config


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "correction"), [(1, "decoupled"), (2, "decoupled"), (1, "behaviour")])
async def test_a_few_steps_raise_the_reward(tiny_policy, learning_config: Config, seed: int,
                                            correction: str) -> None:
    learning_config.generation.seed = seed
    learning_config.training.off_policy_correction = correction  # type: ignore[assignment]
    history = await _train(tiny_policy, learning_config, steps=14, stale=False)
    start, end = _start_end(history)
    assert end - start > 3.0, [round(m.reward_mean, 1) for m in history]
    stepped = [m for m in history if m.stepped]
    assert len(stepped) >= 12  # a converged group (all rewards 10) may skip a step: no signal
    assert all(m.skip_reason == "no_signal" for m in history if not m.stepped)
    assert all(m.ratio_max == pytest.approx(1.0, abs=1e-4) for m in stepped)  # on-policy: ratio 1
    assert all(m.logprob_mismatch is not None and m.logprob_mismatch < 1e-4 for m in stepped)


@pytest.mark.slow
@pytest.mark.parametrize("correction", ["decoupled", "behaviour"])
async def test_learning_from_one_version_stale_samples_stays_stable(
    tiny_policy, learning_config: Config, correction: str
) -> None:
    learning_config.training.off_policy_correction = correction  # type: ignore[assignment]
    history = await _train(tiny_policy, learning_config, steps=14, stale=True)
    stepped = [m for m in history if m.stepped]
    assert len(stepped) >= 12
    assert all(math.isfinite(m.loss) and math.isfinite(m.grad_norm) for m in stepped)
    # one version stale, except right after a skipped (no-signal) step, which bumps no version
    assert all(m.policy_lag_max in (0, 1) for m in stepped)
    assert sum(m.policy_lag_max == 1 for m in stepped) >= 10
    if correction == "behaviour":  # the lag was real, and corrected: by the ratio...
        assert max(m.ratio_max for m in stepped) > 1.01
    else:  # ...or by the importance weight, the PPO ratio staying 1
        assert all(m.ratio_max == pytest.approx(1.0, abs=1e-6) for m in stepped)
        assert max(abs(m.tis_weight_mean - 1.0) for m in stepped) > 0.005
    start, end = _start_end(history)
    assert end - start > 2.0, [round(m.reward_mean, 1) for m in history]


# ---------------------------------------------------------------- bench learn


def test_bench_learn_prints_one_json_object_last(tiny_model_dir, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "learn", "--trajectories", "20", "--max-new-tokens", "12"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert {"trajectories_per_s", "tokens_per_s", "peak_rss_mb", "device", "step_s"} <= result.keys()
    assert result["trajectories"] == 20 and result["model"] == "tiny"
    assert 9 * 20 <= result["tokens"] <= 12 * 20  # completions of 3/4 to all of max_new_tokens
    assert result["trajectories_per_s"] > 0 and result["tokens_per_s"] > 0
    steps = [json.loads(line) for line in lines[:-1] if '"learner_step"' in line]
    # the warm-up, the timed step, then two steps under each correction
    assert [s["stepped"] for s in steps] == [True] * 6
    assert [s["tis_weight_mean"] is None for s in steps[2:]] == [False, True, False, True]
    assert result["step_s_decoupled"] > 0 and result["step_s_behaviour"] > 0
    assert result["decoupled_overhead"] == pytest.approx(
        result["step_s_decoupled"] / result["step_s_behaviour"] - 1.0)
