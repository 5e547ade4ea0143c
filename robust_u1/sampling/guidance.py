"""BAGEL's three-context classifier-free guidance of image editing (gen, cfg_text, cfg_img)."""

from __future__ import annotations

import torch

from ..configuration_recovery import GuidanceConfig


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

    Example:
        >>> v = guided_velocity(v_gen, v_cfg_text, v_cfg_img, GuidanceConfig(cfg_text_scale=4.0))
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
