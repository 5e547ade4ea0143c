"""Flow-GRPO formulas (Stage II of Robust-U1) as pure tensor functions.

Conventions (BAGEL / flow_grpo): flow time ``sigma = 1`` is pure noise and ``sigma = 0`` is data; the
velocity points from data to noise (``v ≈ eps - x0``); one Euler step of the ODE is
``x' = x + v * (sigma_next - sigma)`` with ``dt = sigma_next - sigma < 0``. Tensors are batch-first and
every computation runs in fp32, because the SDE mean overflows in bf16 (flow_grpo, official Robust-U1).

Typical use inside a training step::

    out = sde_step_with_logprob(v, x, sigma, sigma_next, prev_sample=x_next_rollout, sigma_max=sigmas[1])
    loss, stats = clipped_policy_loss(out.log_prob, old_log_prob, advantages, epsilon_low=1e-4)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "SDEStepOutput",
    "clipped_policy_loss",
    "gaussian_kl",
    "grpo_advantages",
    "sample_sde_window",
    "sde_step_with_logprob",
]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class SDEStepOutput:
    """Result of one stochastic denoising step.

    Attributes:
        prev_sample: the next (less noisy) sample ``x'``, fp32, shape of ``sample``.
        log_prob: per-sample log-density of ``prev_sample``, averaged over all non-batch dims, shape ``[B]``.
        prev_sample_mean: the Gaussian mean ``mu``, fp32, shape of ``sample``.
        std_dev_t: flow_grpo's ``std_dev_t``, broadcastable to ``sample``. For ``sde`` it is
            ``a * sqrt(sigma / (1 - sigma))`` (the noise actually added is ``std_dev_t * sqrt(-dt)``);
            for ``cps`` it is the full noise std ``sigma_next * sin(a * pi / 2)``. ``gaussian_kl`` expects it.
    """

    prev_sample: torch.Tensor
    log_prob: torch.Tensor
    prev_sample_mean: torch.Tensor
    std_dev_t: torch.Tensor


def _as_per_sample(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Turn a python float, a 0-d tensor or a per-sample ``[B]`` tensor into fp32 broadcastable to ``like``."""
    tensor = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if tensor.ndim == 1:
        if tensor.shape[0] not in (1, like.shape[0]):
            raise ValueError(f"per-sample sigma has {tensor.shape[0]} entries, batch has {like.shape[0]}")
        tensor = tensor.view(-1, *([1] * (like.ndim - 1)))
    return tensor


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
    """One Flow-GRPO stochastic step from ``sigma`` to ``sigma_next`` and the log-probability of its result.

    ``sde`` (Flow-GRPO): ``std = a * sqrt(sigma / (1 - sigma))``,
    ``mu = x * (1 + std^2 / (2 sigma) * dt) + v * (1 + std^2 (1 - sigma) / (2 sigma)) * dt``,
    ``x' = mu + std * sqrt(-dt) * eps``. At ``sigma == 1`` the ``1 - sigma`` in the std is replaced by
    ``1 - sigma_max``, where ``sigma_max`` is the schedule's second sigma (flow_grpo uses ``sigmas[1]``);
    it must then be given, otherwise a ``ValueError`` is raised.

    ``cps`` (coefficient-preserving sampling): ``std = sigma_next * sin(a * pi / 2)``, ``x0 = x - sigma v``,
    ``x1 = x + (1 - sigma) v``, ``mu = x0 (1 - sigma_next) + x1 * sqrt(sigma_next^2 - std^2)``, ``x' = mu + std * eps``.

    ``log_prob`` is the exact Gaussian log-density ``log N(x'; mu, s^2)`` (``s`` = the noise std actually
    used), averaged over all non-batch dims. flow_grpo's CPS instead uses ``-(x' - mu)^2`` averaged over
    dims (no ``1 / (2 s^2)`` scale, no constants); select it with ``cps_log_prob="squared_error"`` to
    reproduce flow_grpo CPS ratios. When a step is deterministic (``noise_level = 0``, or CPS at
    ``sigma_next = 0``) the step equals the Euler ODE step, the density is a Dirac and ``log_prob`` is
    defined as 0 for it: such steps carry no policy gradient and should not be trained on.

    Args:
        velocity: model output ``v`` (data -> noise), ``[B, ...]``, any float dtype.
        sample: current latents ``x`` at ``sigma``, same shape.
        sigma, sigma_next: current / next flow time, python floats or per-sample ``[B]`` tensors.
        noise_level: ``a``; 0.7 is the Flow-GRPO and official Robust-U1 default.
        generator: RNG for the injected noise (ignored when ``noise`` or ``prev_sample`` is given).
        prev_sample: score this given sample instead of drawing one (training-time recomputation).
        noise: explicit standard-normal noise ``eps`` to use instead of drawing it.
        sigma_max: the schedule's second sigma, needed for ``sde`` when ``sigma == 1``.

    Example::

        >>> v, x = torch.randn(2, 16, 64), torch.randn(2, 16, 64)
        >>> out = sde_step_with_logprob(v, x, sigma=0.8, sigma_next=0.7)
        >>> out.prev_sample.shape, out.log_prob.shape
        (torch.Size([2, 16, 64]), torch.Size([2]))
    """
    if sde_type not in ("sde", "cps"):
        raise ValueError(f"sde_type must be 'sde' or 'cps', got {sde_type!r}")
    if cps_log_prob not in ("gaussian", "squared_error"):
        raise ValueError(f"cps_log_prob must be 'gaussian' or 'squared_error', got {cps_log_prob!r}")
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    if prev_sample is not None and noise is not None:
        raise ValueError("pass either prev_sample (to score it) or noise (to draw with it), not both")

    velocity = velocity.float()
    sample = sample.float()
    sigma = _as_per_sample(sigma, sample)
    sigma_next = _as_per_sample(sigma_next, sample)
    dt = sigma_next - sigma

    if sde_type == "sde":
        at_pure_noise = sigma == 1
        if sigma_max is None and bool(at_pure_noise.any()):
            raise ValueError(
                "sigma == 1 makes sqrt(sigma / (1 - sigma)) infinite: pass sigma_max (the schedule's second sigma, "
                "as flow_grpo does with sigmas[1])"
            )
        # Without sigma_max no sigma is 1 here, so the fill value is never selected.
        sigma_max_filled = torch.full_like(sigma, sigma_max if sigma_max is not None else 0.0)
        denominator_sigma = torch.where(at_pure_noise, sigma_max_filled, sigma)
        std_dev_t = noise_level * torch.sqrt(sigma / (1 - denominator_sigma))
        prev_sample_mean = (
            sample * (1 + std_dev_t**2 / (2 * sigma) * dt)
            + velocity * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
        )
        noise_std = std_dev_t * torch.sqrt(-dt)
    else:
        std_dev_t = sigma_next * math.sin(noise_level * math.pi / 2)
        predicted_data = sample - sigma * velocity
        predicted_noise = sample + (1 - sigma) * velocity
        prev_sample_mean = predicted_data * (1 - sigma_next) + predicted_noise * torch.sqrt(
            sigma_next**2 - std_dev_t**2
        )
        noise_std = std_dev_t

    if prev_sample is None:
        if noise is None:
            noise = torch.randn(sample.shape, generator=generator, device=sample.device, dtype=torch.float32)
        prev_sample = prev_sample_mean + noise_std * noise.float()
    else:
        prev_sample = prev_sample.float()

    # The rollout sample is data, not a function of the current parameters.
    squared_error = (prev_sample.detach() - prev_sample_mean) ** 2
    if sde_type == "cps" and cps_log_prob == "squared_error":
        log_prob = -squared_error
    else:
        # A zero std would give 0/0; the safe std keeps values and gradients finite, the where() sets 0.
        deterministic = noise_std == 0
        safe_std = torch.where(deterministic, torch.ones_like(noise_std), noise_std)
        gaussian = -squared_error / (2 * safe_std**2) - torch.log(safe_std) - _LOG_SQRT_2PI
        log_prob = torch.where(deterministic, torch.zeros_like(gaussian), gaussian)
    log_prob = log_prob.mean(dim=tuple(range(1, log_prob.ndim)))

    return SDEStepOutput(
        prev_sample=prev_sample,
        log_prob=log_prob,
        prev_sample_mean=prev_sample_mean,
        std_dev_t=std_dev_t,
    )


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

    Example::

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

    Example::

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
    divided by ``std_dev_t`` from :func:`sde_step_with_logprob` (for ``sde`` this is the std *before* the
    ``sqrt(-dt)`` factor, exactly as flow_grpo). Take ``.mean()`` for the batch loss. ``std_dev_t`` must be
    positive: deterministic (noise-free) steps have no KL and must not be passed.

    Example::

        >>> gaussian_kl(torch.ones(2, 4), torch.zeros(2, 4), torch.tensor(0.5))
        tensor([2., 2.])
    """
    squared = ((mean.float() - ref_mean.float()) ** 2).mean(dim=tuple(range(1, mean.ndim)))
    std = torch.as_tensor(std_dev_t, dtype=torch.float32, device=squared.device)
    std = std.reshape(-1) if std.numel() > 1 else std.reshape(())
    if bool((std <= 0).any()):
        raise ValueError("gaussian_kl needs std_dev_t > 0; noise-free steps have no KL term")
    return squared / (2 * std**2)


def sample_sde_window(
    num_steps: int,
    window_size: int = 1,
    window_range: tuple[int, int] = (0, 5),
    generator: torch.Generator | None = None,
) -> range:
    """Draw the contiguous denoising-step indices that use SDE noise (and are trained); others run the ODE.

    ``num_steps`` counts denoising steps (transitions ``sigmas[i] -> sigmas[i + 1]``). ``window_range`` is
    half-open ``[lo, hi)`` like flow_grpo's ``sde_window_range``: the start is uniform in
    ``[lo, hi - window_size]`` and the window is ``range(start, start + window_size)``. Defaults are the
    official Robust-U1 ones (1 step inside ``(0, 5)``); flow_grpo's BAGEL template uses 3 steps inside
    ``(0, num_steps // 2)``. ``window_size = 0`` means no window: SDE on every step but the last, which
    flow_grpo keeps deterministic because its near-data Gaussian is too sharp for stable log-probs.

    Example::

        >>> sample_sde_window(15, window_size=3, window_range=(0, 7), generator=torch.Generator().manual_seed(0))
        range(4, 7)
    """
    if window_size == 0:
        return range(0, num_steps - 1)
    low, high = window_range
    if window_size < 0 or not 0 <= low <= high - window_size:
        raise ValueError(f"a window of {window_size} steps does not fit in the range [{low}, {high})")
    if high > num_steps:
        raise ValueError(
            f"window_range {window_range} reaches past the {num_steps} denoising steps; the window would hold "
            "steps that never run"
        )
    start = int(torch.randint(low, high - window_size + 1, (1,), generator=generator))
    return range(start, start + window_size)
