"""Flow-GRPO's reinforcement-learning formulas (Stage II of Robust-U1) as pure tensor functions:
group-relative advantages, the clipped policy loss and the KL penalty.

The stochastic sampler steps whose log-probabilities these losses use live with the other step
rules in `robust_u1.sampling` (`SDEStep`, `sde_step_with_logprob`, `sample_sde_window`); this module
re-exports them under flow_grpo's names (flow time ``sigma``) for readers porting flow_grpo code.

Typical use inside a training step::

    out = SDEStep(noise_level=0.7).step(v, x, t, t_next, prev_sample=x_next_rollout, t_max=timesteps[1])
    loss, stats = clipped_policy_loss(out.log_prob, old_log_prob, advantages, epsilon_low=1e-4)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import torch

from .sampling.steps import SDEStepOutput, sample_sde_window
from .sampling.steps import sde_step_with_logprob as _sde_step

__all__ = [
    "SDEStepOutput",
    "clipped_policy_loss",
    "gaussian_kl",
    "grpo_advantages",
    "sample_sde_window",
    "sde_step_with_logprob",
]


def sde_step_with_logprob(
    velocity: torch.Tensor,
    sample: torch.Tensor,
    sigma: float | torch.Tensor,
    sigma_next: float | torch.Tensor,
    noise_level: float = 0.7,
    sde_type: Literal["sde", "cps"] = "sde",
    generator: torch.Generator | None = None,
    prev_sample: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    sigma_max: float | None = None,
    cps_log_prob: Literal["gaussian", "squared_error"] = "gaussian",
) -> SDEStepOutput:
    """`robust_u1.sampling.sde_step_with_logprob` with flow_grpo's argument names (``sigma`` = flow time ``t``).

    Example::

        >>> v, x = torch.randn(2, 16, 64), torch.randn(2, 16, 64)
        >>> sde_step_with_logprob(v, x, sigma=0.8, sigma_next=0.7).log_prob.shape
        torch.Size([2])
    """
    return _sde_step(
        velocity, sample, sigma, sigma_next, noise_level=noise_level, sde_type=sde_type, generator=generator,
        prev_sample=prev_sample, noise=noise, t_max=sigma_max, cps_log_prob=cps_log_prob,
    )  # fmt: skip


def _group_index(
    num_rewards: int,
    num_generations: int | None,
    group_ids: Sequence[Hashable] | torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    """Integer group index per reward, from consecutive groups of ``num_generations`` or explicit ids."""
    if (num_generations is None) == (group_ids is None):
        raise ValueError("pass exactly one of num_generations or group_ids")
    if num_generations is not None:
        if num_generations < 1 or num_rewards % num_generations:
            raise ValueError(f"{num_rewards} rewards cannot be split into groups of {num_generations}")
        return torch.arange(num_rewards, device=device) // num_generations
    if len(group_ids) != num_rewards:
        raise ValueError(f"got {len(group_ids)} group ids for {num_rewards} rewards")
    if isinstance(group_ids, torch.Tensor):
        return torch.unique(group_ids, return_inverse=True)[1].to(device)
    index_of: dict[Hashable, int] = {}
    return torch.tensor([index_of.setdefault(g, len(index_of)) for g in group_ids], device=device)


def grpo_advantages(
    rewards: torch.Tensor,
    num_generations: int | None = None,
    *,
    group_ids: Sequence[Hashable] | torch.Tensor | None = None,
    scale_rewards: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-4,
    clip: float | None = 5.0,
) -> torch.Tensor:
    """Group-relative advantages ``(r - mean_group) / (std + eps)``, clipped to ``±clip``.

    Groups are either consecutive blocks of ``num_generations`` rewards (TRL layout) or given by
    ``group_ids`` (one hashable per reward, e.g. the prompt or sample id, as flow_grpo's per-prompt tracker).
    ``scale_rewards`` follows TRL: ``"group"`` divides by the group std, ``"batch"`` by the std of the whole
    batch (flow_grpo ``global_std``), ``"none"`` does not divide. The std is the population std (``ddof=0``,
    flow_grpo's ``np.std``), not TRL's unbiased one. NaN and ±inf rewards (unscorable samples) are left out
    of every mean and std and get advantage 0, so they contribute no gradient. ``clip=None`` disables clipping.

    Example:
        >>> grpo_advantages(torch.tensor([1.0, 3.0, 0.0, float("nan")]), num_generations=2)
        tensor([-0.9999,  0.9999,  0.0000,  0.0000])
    """
    if scale_rewards not in ("group", "batch", "none"):
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}")
    rewards_64 = rewards.detach().reshape(-1).double()  # fp64 statistics, as flow_grpo's numpy tracker
    group = _group_index(rewards_64.numel(), num_generations, group_ids, rewards_64.device)
    valid = torch.isfinite(rewards_64)  # ±inf is unscored like NaN: it would make its whole group NaN
    filled = torch.where(valid, rewards_64, torch.zeros_like(rewards_64))

    num_groups = int(group.max()) + 1 if group.numel() else 0
    counts = torch.zeros(num_groups, dtype=torch.float64, device=group.device).index_add_(0, group, valid.double())
    sums = torch.zeros_like(counts).index_add_(0, group, filled)
    group_mean = (sums / counts.clamp_min(1))[group]
    centred = torch.where(valid, rewards_64 - group_mean, torch.zeros_like(rewards_64))

    if scale_rewards == "group":
        squares = torch.zeros_like(counts).index_add_(0, group, centred**2)
        std = torch.sqrt(squares / counts.clamp_min(1))[group]
    elif scale_rewards == "batch":
        batch_mean = filled.sum() / valid.sum().clamp_min(1)
        batch_centred = torch.where(valid, rewards_64 - batch_mean, torch.zeros_like(rewards_64))
        std = torch.sqrt((batch_centred**2).sum() / valid.sum().clamp_min(1)).expand_as(rewards_64)
    else:
        std = None

    advantages = centred if std is None else centred / (std + eps)
    if clip is not None:
        advantages = advantages.clamp(-clip, clip)
    return advantages.to(torch.float32).reshape(rewards.shape)


def clipped_policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 1e-4,
    epsilon_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO/GRPO clipped surrogate ``mean(-min(A * r, A * clip(r, 1 - eps_low, 1 + eps_high)))``.

    ``r = exp(logp - logp_old)`` per sample; ``old_log_prob`` and ``advantages`` are treated as constants.

    ``epsilon_high`` defaults to ``epsilon_low`` (flow_grpo's symmetric ``clip_range``). Returned stats
    (detached scalars): ``clip_fraction`` (share of ratios outside the clip interval, flow_grpo's
    ``clipfrac``), ``approx_kl`` (``0.5 * mean((logp - logp_old)^2)``, as flow_grpo logs), ``ratio_mean``,
    ``ratio_min``, ``ratio_max``.

    Example:
        >>> logp = torch.zeros(3, requires_grad=True)
        >>> loss, stats = clipped_policy_loss(logp, torch.zeros(3), torch.tensor([1.0, -1.0, 3.0]))
        >>> loss.item(), stats["ratio_mean"].item()
        (-1.0, 1.0)
    """
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    advantages = advantages.detach().float()
    log_ratio = log_prob.float() - old_log_prob.detach().float()
    ratio = torch.exp(log_ratio)
    unclipped = advantages * ratio
    clipped = advantages * torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.minimum(unclipped, clipped).mean()

    ratio_detached = ratio.detach()
    outside = (ratio_detached < 1 - epsilon_low) | (ratio_detached > 1 + epsilon_high)
    stats = {
        "clip_fraction": outside.float().mean(),
        "approx_kl": 0.5 * (log_ratio.detach() ** 2).mean(),
        "ratio_mean": ratio_detached.mean(),
        "ratio_min": ratio_detached.min(),
        "ratio_max": ratio_detached.max(),
    }
    return loss, stats


def gaussian_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std_dev_t: torch.Tensor | float) -> torch.Tensor:
    """Per-sample KL penalty ``mean_dims((mu_theta - mu_ref)^2) / (2 * std_dev_t^2)``, shape ``[B]``.

    As in flow_grpo, the squared mean difference is averaged over all non-batch dims of each sample and
    divided by ``std_dev_t`` from the SDE step (`robust_u1.sampling.SDEStep`) (for ``sde`` this is the std *before* the
    ``sqrt(-dt)`` factor, exactly as flow_grpo). Take ``.mean()`` for the batch loss. ``std_dev_t`` must be
    positive: deterministic (noise-free) steps have no KL and must not be passed.

    Example:
        >>> gaussian_kl(torch.ones(2, 4), torch.zeros(2, 4), torch.tensor(0.5))
        tensor([2., 2.])
    """
    squared = ((mean.float() - ref_mean.float()) ** 2).mean(dim=tuple(range(1, mean.ndim)))
    std = torch.as_tensor(std_dev_t, dtype=torch.float32, device=squared.device)
    std = std.reshape(-1) if std.numel() > 1 else std.reshape(())
    if bool((std <= 0).any()):
        raise ValueError("gaussian_kl needs std_dev_t > 0; noise-free steps have no KL term")
    return squared / (2 * std**2)
