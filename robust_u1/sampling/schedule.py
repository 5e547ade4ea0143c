"""The flow schedule: BAGEL's timestep shift, the one formula for training and sampling.

Conventions (BAGEL, flow_grpo): flow time ``t = 1`` is pure noise and ``t = 0`` data (flow_grpo calls
it ``sigma``); ``x_t = (1 − t)·x₀ + t·ε``; the model predicts the velocity ``v = ε − x₀``.

diffusers' `FlowMatchEulerDiscreteScheduler` drops the t = 0 end from its linspace, so the schedule
of the official code (both ends included) is written here.
"""

from __future__ import annotations

import torch


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """BAGEL's timestep shift ``s·t / (1 + (s − 1)·t)``, for sampling schedules and training timesteps alike.

    Example:
        >>> shift_timesteps(torch.tensor([0.5]), 3.0)
        tensor([0.7500])
    """
    return shift * t / (1 + (shift - 1) * t)


def flow_timesteps(num_timesteps: int, shift: float, device=None) -> torch.Tensor:
    """The sampling schedule: `shift_timesteps` of ``u = linspace(1, 0, num_timesteps)`` (both ends included).

    Example:
        >>> flow_timesteps(6, 3.0)
        tensor([1.0000, 0.9231, 0.8182, 0.6667, 0.4286, 0.0000])
    """
    if num_timesteps < 2:
        raise ValueError(f"num_inference_steps must be an int >= 2, got {num_timesteps} (the schedule points, t = 1 and t = 0 included).")
    return shift_timesteps(torch.linspace(1, 0, num_timesteps, device=device), shift)
