"""The flow sampler of BAGEL's image generation: shifted schedule, classifier-free guidance, Euler step.

Conventions: flow time t = 1 is pure noise and t = 0 data; x_t = (1 − t)·x₀ + t·ε; the model
predicts v = ε − x₀, so one Euler step from t to t' < t is x ← x − v·(t − t').

diffusers' `FlowMatchEulerDiscreteScheduler` drops the t = 0 end from its linspace and guides
nothing, so the schedule and BAGEL's three-context guidance are written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

RenormType = Literal["global", "channel", "text_channel"]


def flow_timesteps(num_timesteps: int, shift: float, device=None) -> torch.Tensor:
    """``t_k = s·u_k / (1 + (s − 1)·u_k)`` with ``u = linspace(1, 0, num_timesteps)`` (both ends included).

    Example:
        >>> flow_timesteps(6, 3.0)
        tensor([1.0000, 0.9231, 0.8182, 0.6667, 0.4286, 0.0000])
    """
    if num_timesteps < 2:
        raise ValueError(f"num_inference_steps must be at least 2 (schedule points incl. t=1 and t=0), got {num_timesteps}.")
    u = torch.linspace(1, 0, num_timesteps, device=device)
    return shift * u / (1 + (shift - 1) * u)


@dataclass
class GuidanceConfig:
    """BAGEL's image-editing guidance (Robust-U1 demo defaults).

    Args:
        cfg_text_scale: strength of the text condition (gen vs cfg_text context); ≤ 1 disables guidance.
        cfg_img_scale: strength of the image condition (text-guided vs cfg_img context); ≤ 1 skips it.
        cfg_interval: guidance is applied where ``cfg_interval[0] < t ≤ cfg_interval[1]``.
        cfg_renorm_type: ``text_channel`` renormalises the text-guided velocity per token;
            ``channel`` / ``global`` renormalise the final velocity per token / over the whole image.
        cfg_renorm_min: lower clamp of the renormalisation factor (1 disables renormalisation).
    """

    cfg_text_scale: float = 4.0
    cfg_img_scale: float = 2.0
    cfg_interval: tuple[float, float] = (0.0, 1.0)
    cfg_renorm_type: RenormType = "text_channel"
    cfg_renorm_min: float = 0.0

    def __post_init__(self):
        if self.cfg_renorm_type not in ("global", "channel", "text_channel"):
            raise ValueError(
                f"cfg_renorm_type must be 'global', 'channel' or 'text_channel', got {self.cfg_renorm_type!r}."
            )
        low, high = self.cfg_interval
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"cfg_interval must satisfy 0 <= low <= high <= 1, got {self.cfg_interval}.")

    def is_active(self, t: float) -> bool:
        return self.cfg_text_scale > 1.0 and self.cfg_interval[0] < float(t) <= self.cfg_interval[1]

    @property
    def uses_image_context(self) -> bool:
        return self.cfg_img_scale > 1.0


def _renorm(reference: torch.Tensor, guided: torch.Tensor, per_token: bool, minimum: float) -> torch.Tensor:
    dims = (-1,) if per_token else tuple(range(guided.dim()))
    ratio = reference.norm(dim=dims, keepdim=True) / (guided.norm(dim=dims, keepdim=True) + 1e-8)
    return guided * ratio.clamp(min=minimum, max=1.0)


def guided_velocity(
    v_gen: torch.Tensor,
    v_cfg_text: torch.Tensor,
    v_cfg_img: torch.Tensor | None,
    guidance: GuidanceConfig,
) -> torch.Tensor:
    """Combines the three context velocities of one image [n_tok, C] into the guided velocity.

    ``u = v_cfg_text + s_txt·(v_gen − v_cfg_text)``, then ``v = v_cfg_img + s_img·(u − v_cfg_img)``,
    renormalised to at most the norm of ``v_gen`` as `GuidanceConfig.cfg_renorm_type` says.
    The ``global`` norm is taken per image (the official code takes it over the whole batch, which
    would make one image's result depend on the others batched with it).
    """
    m = guidance.cfg_renorm_min
    text_guided = v_cfg_text + guidance.cfg_text_scale * (v_gen - v_cfg_text)
    if guidance.cfg_renorm_type == "text_channel":
        text_guided = _renorm(v_gen, text_guided, per_token=True, minimum=m)
    if not guidance.uses_image_context:
        guided = text_guided
    else:
        guided = v_cfg_img + guidance.cfg_img_scale * (text_guided - v_cfg_img)
    if guidance.cfg_renorm_type == "text_channel":
        return guided
    return _renorm(v_gen, guided, per_token=guidance.cfg_renorm_type == "channel", minimum=m)


def euler_step(x: torch.Tensor, velocity: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """The ODE step ``x − v·(t − t_next)``."""
    return x - velocity.to(x.dtype) * (t - t_next)
