"""Flow-GRPO formulas checked against closed-form Gaussians and hand-computed values."""

import math

import numpy as np
import pytest
import torch

from robust_u1.flow_grpo_math import (
    clipped_policy_loss,
    gaussian_kl,
    grpo_advantages,
    sample_sde_window,
    sde_step_with_logprob,
)

NOISE_LEVEL = 0.7


def _inputs(batch: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 6, 8, generator=generator), torch.randn(batch, 6, 8, generator=generator)


def _sde_mean_and_noise_std(velocity, sample, sigma, sigma_next, noise_level=NOISE_LEVEL):
    """flow_grpo's SDE step (yifan123/flow_grpo ``sde_step_with_logprob``), written out independently,
    for per-sample [B] sigmas: std = a·sqrt(σ/(1−σ)), μ = x(1 + std²dt/(2σ)) + v(1 + std²(1−σ)/(2σ))dt."""
    sigma, sigma_next = sigma.view(-1, 1, 1), sigma_next.view(-1, 1, 1)
    dt = sigma_next - sigma
    std = noise_level * torch.sqrt(sigma / (1 - sigma))
    mean = sample * (1 + std**2 / (2 * sigma) * dt) + velocity * (1 + std**2 * (1 - sigma) / (2 * sigma)) * dt
    return mean, std * torch.sqrt(-dt)


def _cps_mean_and_noise_std(velocity, sample, sigma, sigma_next, noise_level=NOISE_LEVEL):
    sigma, sigma_next = sigma.view(-1, 1, 1), sigma_next.view(-1, 1, 1)
    std = sigma_next * math.sin(noise_level * math.pi / 2)
    data, noise = sample - sigma * velocity, sample + (1 - sigma) * velocity
    return data * (1 - sigma_next) + noise * torch.sqrt(sigma_next**2 - std**2), std


def _gaussian_log_prob(value, mean, std):
    return torch.distributions.Normal(mean, std).log_prob(value).mean(dim=(1, 2))


SIGMA = torch.tensor([0.95, 0.7, 0.5, 0.3])
SIGMA_NEXT = torch.tensor([0.85, 0.6, 0.45, 0.1])


@pytest.mark.parametrize(
    ("sde_type", "closed_form"), [("sde", _sde_mean_and_noise_std), ("cps", _cps_mean_and_noise_std)]
)
def test_step_log_prob_is_the_closed_form_gaussian(sde_type, closed_form):
    velocity, sample = _inputs()
    out = sde_step_with_logprob(
        velocity, sample, SIGMA, SIGMA_NEXT, sde_type=sde_type, generator=torch.Generator().manual_seed(1)
    )
    mean, noise_std = closed_form(velocity, sample, SIGMA, SIGMA_NEXT)

    torch.testing.assert_close(out.prev_sample_mean, mean)
    torch.testing.assert_close(out.log_prob, _gaussian_log_prob(out.prev_sample, mean, noise_std))
    assert out.log_prob.shape == (4,)


@pytest.mark.parametrize(
    ("sde_type", "closed_form"), [("sde", _sde_mean_and_noise_std), ("cps", _cps_mean_and_noise_std)]
)
def test_drawn_samples_have_the_step_mean_and_std(sde_type, closed_form):
    draws = 20_000
    velocity, sample = (t[:1].expand(draws, -1, -1) for t in _inputs(batch=1))
    sigma, sigma_next = torch.full((draws,), 0.6), torch.full((draws,), 0.4)
    out = sde_step_with_logprob(
        velocity, sample, sigma, sigma_next, sde_type=sde_type, generator=torch.Generator().manual_seed(2)
    )
    mean, noise_std = closed_form(velocity[:1], sample[:1], sigma[:1], sigma_next[:1])
    expected_std = float(noise_std.squeeze())

    tolerance = 5 * expected_std / math.sqrt(draws)
    assert (out.prev_sample.mean(dim=0) - mean[0]).abs().max() < tolerance
    assert (out.prev_sample.std(dim=0) - expected_std).abs().max() < 0.05 * expected_std


def test_cps_squared_error_convention_is_flow_grpo_unscaled_log_prob():
    velocity, sample = _inputs()
    out = sde_step_with_logprob(velocity, sample, SIGMA, SIGMA_NEXT, sde_type="cps", cps_log_prob="squared_error")
    expected = -((out.prev_sample - out.prev_sample_mean) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(out.log_prob, expected)


@pytest.mark.parametrize("sde_type", ["sde", "cps"])
def test_zero_noise_level_is_the_euler_ode_step_with_zero_log_prob(sde_type):
    velocity, sample = _inputs()
    velocity.requires_grad_(True)
    out = sde_step_with_logprob(velocity, sample, SIGMA, SIGMA_NEXT, noise_level=0.0, sde_type=sde_type)

    euler = sample + velocity * (SIGMA_NEXT - SIGMA).view(-1, 1, 1)
    torch.testing.assert_close(out.prev_sample, euler)
    torch.testing.assert_close(out.prev_sample_mean, euler)
    assert torch.equal(out.log_prob, torch.zeros(4))
    out.log_prob.sum().backward()
    assert torch.isfinite(velocity.grad).all()


def test_cps_last_step_to_data_is_deterministic_without_nan():
    velocity, sample = _inputs(batch=1)
    out = sde_step_with_logprob(velocity, sample, 0.2, 0.0, sde_type="cps")
    torch.testing.assert_close(out.prev_sample, sample - 0.2 * velocity)
    assert torch.equal(out.log_prob, torch.zeros(1))


def test_bf16_inputs_are_computed_in_fp32():
    velocity, sample = _inputs()
    velocity_bf16, sample_bf16 = velocity.bfloat16(), sample.bfloat16()
    noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(3))

    out = sde_step_with_logprob(velocity_bf16, sample_bf16, SIGMA, SIGMA_NEXT, noise=noise)
    reference = sde_step_with_logprob(velocity_bf16.float(), sample_bf16.float(), SIGMA, SIGMA_NEXT, noise=noise)

    for field in ("prev_sample", "log_prob", "prev_sample_mean", "std_dev_t"):
        assert getattr(out, field).dtype == torch.float32
        torch.testing.assert_close(getattr(out, field), getattr(reference, field), rtol=0, atol=0)


def test_given_prev_sample_is_scored_not_redrawn():
    velocity, sample = _inputs()
    given = torch.randn(sample.shape, generator=torch.Generator().manual_seed(4))
    out = sde_step_with_logprob(velocity, sample, SIGMA, SIGMA_NEXT, prev_sample=given.bfloat16())
    mean, noise_std = _sde_mean_and_noise_std(velocity, sample, SIGMA, SIGMA_NEXT)

    torch.testing.assert_close(out.prev_sample, given.bfloat16().float())
    torch.testing.assert_close(out.log_prob, _gaussian_log_prob(out.prev_sample, mean, noise_std))


def test_log_prob_gradient_reaches_the_velocity_but_not_the_rollout_sample():
    velocity, sample = _inputs()
    velocity.requires_grad_(True)
    given = torch.randn(sample.shape, requires_grad=True)
    sde_step_with_logprob(velocity, sample, SIGMA, SIGMA_NEXT, prev_sample=given).log_prob.sum().backward()
    assert velocity.grad.abs().sum() > 0
    assert given.grad is None


def test_explicit_noise_and_generator_make_the_step_reproducible():
    velocity, sample = _inputs()
    noise = torch.randn(sample.shape)
    out = sde_step_with_logprob(velocity, sample, SIGMA, SIGMA_NEXT, noise=noise)
    _, noise_std = _sde_mean_and_noise_std(velocity, sample, SIGMA, SIGMA_NEXT)
    torch.testing.assert_close(out.prev_sample, out.prev_sample_mean + noise_std * noise)

    first, second = (
        sde_step_with_logprob(velocity, sample, 0.5, 0.4, generator=torch.Generator().manual_seed(5))
        for _ in range(2)
    )
    assert torch.equal(first.prev_sample, second.prev_sample)
    with pytest.raises(ValueError, match="not both"):
        sde_step_with_logprob(velocity, sample, 0.5, 0.4, prev_sample=sample, noise=noise)


def test_pure_noise_sigma_uses_sigma_max_and_requires_it():
    velocity, sample = _inputs(batch=2)
    with pytest.raises(ValueError, match="sigma_max"):
        sde_step_with_logprob(velocity, sample, 1.0, 0.9)

    out = sde_step_with_logprob(velocity, sample, torch.tensor([1.0, 0.9]), torch.tensor([0.9, 0.8]), sigma_max=0.9)
    expected_std = torch.tensor([NOISE_LEVEL * math.sqrt(1 / (1 - 0.9)), NOISE_LEVEL * math.sqrt(0.9 / 0.1)])
    torch.testing.assert_close(out.std_dev_t.flatten(), expected_std)
    assert torch.isfinite(out.log_prob).all()


def test_scalar_sigma_matches_per_sample_sigma():
    velocity, sample = _inputs()
    noise = torch.randn(sample.shape)
    scalar = sde_step_with_logprob(velocity, sample, 0.5, 0.4, noise=noise)
    per_sample = sde_step_with_logprob(velocity, sample, torch.full((4,), 0.5), torch.full((4,), 0.4), noise=noise)
    torch.testing.assert_close(scalar.log_prob, per_sample.log_prob)
    torch.testing.assert_close(scalar.prev_sample, per_sample.prev_sample)


# ----------------------------------------------------------------------------------------------- advantages


def test_group_advantages_use_population_std_per_group():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0])
    advantages = grpo_advantages(rewards, num_generations=4)

    first = np.array([1.0, 2.0, 3.0, 4.0])
    expected_first = (first - first.mean()) / (first.std(ddof=0) + 1e-4)
    np.testing.assert_allclose(advantages[:4].numpy(), expected_first, rtol=1e-6)
    assert torch.equal(advantages[4:], torch.zeros(4))  # a group with one reward value teaches nothing


def test_nan_rewards_are_left_out_of_group_statistics_and_get_zero_advantage():
    nan = float("nan")
    rewards = torch.tensor([1.0, nan, 3.0, 5.0, nan, nan, nan, nan])  # second group: nothing scorable
    advantages = grpo_advantages(rewards, 4)

    valid = np.array([1.0, 3.0, 5.0])
    std = valid.std(ddof=0)
    expected = [(1 - 3) / (std + 1e-4), 0.0, 0.0, (5 - 3) / (std + 1e-4), 0.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(advantages.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_batch_scaling_divides_by_batch_std_and_none_only_centres():
    rewards = torch.tensor([0.0, 2.0, 10.0, 14.0])
    batch_std = np.array([0.0, 2.0, 10.0, 14.0]).std(ddof=0)

    batch = grpo_advantages(rewards, 2, scale_rewards="batch")
    np.testing.assert_allclose(batch.numpy(), np.array([-1.0, 1.0, -2.0, 2.0]) / (batch_std + 1e-4), rtol=1e-6)

    centred = grpo_advantages(rewards, 2, scale_rewards="none")
    assert torch.equal(centred, torch.tensor([-1.0, 1.0, -2.0, 2.0]))


def test_group_ids_need_not_be_consecutive():
    rewards = torch.tensor([1.0, 10.0, 3.0, 20.0])
    by_id = grpo_advantages(rewards, group_ids=["cat.png", "dog.png", "cat.png", "dog.png"], scale_rewards="none")
    assert torch.equal(by_id, torch.tensor([-1.0, -5.0, 1.0, 5.0]))
    by_tensor = grpo_advantages(rewards, group_ids=torch.tensor([7, 3, 7, 3]), scale_rewards="none")
    assert torch.equal(by_tensor, by_id)


def test_advantages_are_clipped():
    rewards = torch.zeros(51)
    rewards[0] = 1.0  # one success among 51: advantage sqrt(50) ≈ 7.07 before clipping
    assert grpo_advantages(rewards, 51, clip=None)[0].item() == pytest.approx(math.sqrt(50), rel=1e-3)
    assert grpo_advantages(rewards, 51)[0].item() == 5.0
    assert grpo_advantages(rewards, 51, clip=2.0)[0].item() == 2.0


def test_advantage_argument_errors():
    with pytest.raises(ValueError, match="groups of 3"):
        grpo_advantages(torch.zeros(4), 3)
    with pytest.raises(ValueError, match="exactly one"):
        grpo_advantages(torch.zeros(4))
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo_advantages(torch.zeros(4), 2, scale_rewards="global")


# ------------------------------------------------------------------------------------------------ policy loss


def test_first_iteration_ratio_is_one_and_loss_is_minus_mean_advantage():
    advantages = torch.tensor([0.5, -1.5, 2.0, 0.0])
    log_prob = torch.tensor([-3.0, 1.0, 0.2, 7.0], requires_grad=True)
    loss, stats = clipped_policy_loss(log_prob, log_prob.detach().clone(), advantages, epsilon_low=1e-4)

    assert loss.item() == pytest.approx(-advantages.mean().item())
    assert stats["ratio_mean"].item() == stats["ratio_min"].item() == stats["ratio_max"].item() == 1.0
    assert stats["clip_fraction"].item() == 0.0
    assert stats["approx_kl"].item() == 0.0
    loss.backward()
    torch.testing.assert_close(log_prob.grad, -advantages / 4)  # d(-A·r)/dlogp = -A·r with r = 1


def test_clipped_loss_matches_hand_values():
    ratio = torch.tensor([1.5, 0.5, 1.0, 1.1])
    advantages = torch.tensor([1.0, 1.0, -1.0, 2.0])
    log_prob = ratio.log().requires_grad_(True)
    loss, stats = clipped_policy_loss(log_prob, torch.zeros(4), advantages, epsilon_low=0.2)

    # per sample -min(A·r, A·clip(r, 0.8, 1.2)): -1.2, -0.5, 1.0, -2.2
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.0 - 2.2) / 4)
    assert stats["clip_fraction"].item() == 0.5
    assert stats["ratio_min"].item() == pytest.approx(0.5)
    assert stats["ratio_max"].item() == pytest.approx(1.5)
    loss.backward()
    assert log_prob.grad[0].item() == 0.0  # clipped above with A > 0: no push further
    assert log_prob.grad[1].item() < 0  # unclipped side keeps its gradient


def test_asymmetric_clip_range():
    log_prob = torch.tensor([1.25, 0.85]).log()
    _, stats = clipped_policy_loss(log_prob, torch.zeros(2), torch.ones(2), epsilon_low=0.1, epsilon_high=0.3)
    assert stats["clip_fraction"].item() == 0.5  # only 0.85 < 0.9 is outside [0.9, 1.3]


# --------------------------------------------------------------------------------------------------------- KL


def test_kl_is_zero_for_equal_means_and_matches_hand_value():
    mean = torch.randn(2, 3, 4)
    assert torch.equal(gaussian_kl(mean, mean.clone(), torch.tensor(0.3)), torch.zeros(2))

    ref_mean = torch.zeros(2, 2)
    mean = torch.tensor([[2.0, 2.0], [1.0, 3.0]])
    std_dev_t = torch.tensor([0.5, 1.0]).view(2, 1)  # per-sample, broadcastable as sde_step returns it
    # sample 0: mean(4, 4) / (2·0.25) = 8; sample 1: mean(1, 9) / (2·1) = 2.5
    torch.testing.assert_close(gaussian_kl(mean, ref_mean, std_dev_t), torch.tensor([8.0, 2.5]))


def test_kl_accepts_sde_step_std_and_rejects_noise_free_steps():
    velocity, sample = _inputs()
    out = sde_step_with_logprob(velocity, sample, SIGMA, SIGMA_NEXT)
    shifted = out.prev_sample_mean + 0.1
    expected = 0.01 / (2 * out.std_dev_t.flatten() ** 2)
    torch.testing.assert_close(gaussian_kl(shifted, out.prev_sample_mean, out.std_dev_t), expected)
    with pytest.raises(ValueError, match="std_dev_t > 0"):
        gaussian_kl(shifted, out.prev_sample_mean, torch.zeros(4))


# ----------------------------------------------------------------------------------------------------- window


def test_official_window_is_one_step_anywhere_in_the_first_five():
    generator = torch.Generator().manual_seed(0)
    windows = [sample_sde_window(50, generator=generator) for _ in range(200)]
    assert all(len(window) == 1 for window in windows)
    assert {window.start for window in windows} == {0, 1, 2, 3, 4}


def test_flow_grpo_bagel_window_stays_in_first_half_and_is_reproducible():
    generator = torch.Generator().manual_seed(0)
    windows = [sample_sde_window(15, 3, (0, 15 // 2), generator) for _ in range(200)]
    assert all(window.step == 1 and len(window) == 3 and window.start >= 0 and window.stop <= 7 for window in windows)
    assert {window.start for window in windows} == {0, 1, 2, 3, 4}
    again = [sample_sde_window(15, 3, (0, 7), torch.Generator().manual_seed(9)) for _ in range(2)]
    assert again[0] == again[1]


def test_window_size_zero_means_every_step_but_the_last():
    assert sample_sde_window(15, window_size=0) == range(0, 14)


def test_window_errors():
    with pytest.raises(ValueError, match="past the 4 denoising steps"):
        sample_sde_window(4, 1, (0, 5))
    with pytest.raises(ValueError, match="does not fit"):
        sample_sde_window(20, 6, (0, 5))
