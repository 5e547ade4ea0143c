"""The one SSIM of Robust-U1, shared by the stage II reward and the evaluation harness.

SSIM definition
---------------
Wang et al. (2004) SSIM with a Gaussian window of σ = 1.5 truncated to 11 × 11 taps, constants
K1 = 0.01 and K2 = 0.03, ``data_range`` = 1 (images in [0, 1]), population (not sample) covariance,
computed per RGB channel and averaged over the **valid region only** (the window never leaves the
image; no padding) and then over the channels. This is scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1, channel_axis=-1)`` and pytorch-msssim's ``ssim(win_size=11, win_sigma=1.5)``, which
computes it here, in float64. Images smaller than the window on a side have no valid region and are
refused. (torchmetrics' default SSIM instead averages over a reflect-padded border, which differs
by up to ~4e-3 on natural images.)

Example:
    >>> import torch
    >>> image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> float(structural_similarity(image, image))
    1.0
"""

from __future__ import annotations

import torch
from pytorch_msssim import ssim as _msssim_ssim

__all__ = ["SSIM_SIGMA", "SSIM_WINDOW", "structural_similarity"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def structural_similarity(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
) -> torch.Tensor:
    """SSIM of images ``(C, H, W)`` or batches ``(N, C, H, W)`` of the same size (see the module
    docstring for the definition); returns a float64 scalar for one image, ``(N,)`` for a batch.

    Raises ``ValueError`` for images smaller than ``win_size`` on a side or of different sizes.

    Example:
        >>> import torch
        >>> flat = torch.full((3, 16, 16), 0.5)
        >>> round(float(structural_similarity(flat, flat * 0.8)), 4)
        0.9877
    """
    if prediction.shape != target.shape:
        raise ValueError(f"SSIM needs images of the same shape; got {tuple(prediction.shape)} and {tuple(target.shape)}")
    if prediction.ndim not in (3, 4):
        raise ValueError(f"SSIM expects (C, H, W) or (N, C, H, W) images; got shape {tuple(prediction.shape)}")
    if win_size % 2 == 0 or win_size < 1:
        raise ValueError(f"SSIM window must be a positive odd number of pixels; got {win_size}")
    height, width = prediction.shape[-2:]
    if min(height, width) < win_size:
        raise ValueError(
            f"image of {height}x{width} px is smaller than the {win_size}-px SSIM window; "
            f"SSIM is defined on images of at least {win_size}x{win_size} px (use larger images)"
        )
    single = prediction.ndim == 3
    batch_prediction = (prediction[None] if single else prediction).double()
    batch_target = (target[None] if single else target).to(batch_prediction.device).double()
    values = _msssim_ssim(
        batch_prediction, batch_target, data_range=data_range, win_size=win_size, win_sigma=sigma, size_average=False
    )
    return values[0] if single else values
