"""Recovery quality: PSNR, SSIM and LPIPS between recovered and clean images.

Images are read with the library's one image-input rule (`robust_u1.image_utils`) and compared as RGB
in [0, 1] (``data_range=1``), one image at a time, and averaged over the set, as image-restoration
papers report them. A recovered image whose size differs from its clean reference (BAGEL outputs
multiples of 16 px) is resized to the reference size with bicubic resampling first. PSNR (torchmetrics)
and SSIM are computed in float64. SSIM is the library's one definition, shared with the stage II
reward (`robust_u1.image_metrics.structural_similarity`): Gaussian window σ = 1.5, 11 × 11 taps, mean
over the valid region, as scikit-image (``gaussian_weights=True, use_sample_covariance=False,
data_range=1``) and pytorch-msssim compute it; images under 11 px on a side are refused. LPIPS uses the
AlexNet variant by default, on inputs scaled to [-1, 1] (``normalize=True``).

LPIPS needs torchvision's ImageNet backbone weights; torchmetrics ships only LPIPS's linear heads.
They are looked up in the torch-hub cache (``$TORCH_HOME/hub/checkpoints``) and never downloaded
unless ``allow_download=True``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio
from tqdm.auto import tqdm

from ..image_metrics import structural_similarity
from ..image_utils import to_float_tensor
from .protocols import Recoverer

RECOVERY_METRICS: tuple[str, ...] = ("psnr", "ssim", "lpips")

_LPIPS_BACKBONES = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


class LPIPSWeightsNotFoundError(FileNotFoundError):
    """The ImageNet backbone weights LPIPS needs are not in the local torch-hub cache."""


def lpips_weights_path(net_type: str = "alex") -> Path:
    """Where torch hub keeps the backbone weights LPIPS ``net_type`` needs (the file may not exist).

    Example:
        >>> lpips_weights_path("alex").name
        'alexnet-owt-7be5be79.pth'
    """
    import torchvision

    if net_type not in _LPIPS_BACKBONES:
        raise ValueError(f"net_type must be one of {sorted(_LPIPS_BACKBONES)}, got {net_type!r}.")
    url = getattr(torchvision.models, _LPIPS_BACKBONES[net_type]).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_lpips(net_type: str = "alex", *, allow_download: bool = False):
    """A torchmetrics LPIPS module, refusing to download its backbone unless ``allow_download``.

    Example:
        >>> lpips = load_lpips("alex")  # needs $TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth  # doctest: +SKIP
    """
    weights = lpips_weights_path(net_type)
    if not allow_download and not weights.is_file():
        import torchvision

        url = getattr(torchvision.models, _LPIPS_BACKBONES[net_type]).DEFAULT.url
        raise LPIPSWeightsNotFoundError(
            f"LPIPS (net_type={net_type!r}) needs torchvision's ImageNet weights file {weights.name!r} in "
            f"{weights.parent} (torch hub's cache: $TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting to "
            f"~/.cache/torch). Download {url} on a machine with network access and copy it there, or set "
            "TORCH_HOME to a directory whose hub/checkpoints/ folder holds it, or pass allow_download=True."
        )
    return _cached_lpips(net_type, str(weights))


@functools.lru_cache(maxsize=4)
def _cached_lpips(net_type: str, weights_path: str):
    # weights_path is part of the key so that a changed TORCH_HOME loads the other file.
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type=net_type, reduction="none", normalize=True).eval()


def recovery_scores(
    recovered: Sequence[Image.Image | np.ndarray | torch.Tensor],
    references: Sequence[Image.Image | np.ndarray | torch.Tensor],
    *,
    metrics: Sequence[str] = RECOVERY_METRICS,
    lpips_net: str = "alex",
    allow_download: bool = False,
) -> dict[str, list[float]]:
    """Per-image PSNR (dB), SSIM and LPIPS of each recovered image against its clean reference.

    Example:
        >>> from PIL import Image
        >>> clean, recovered = Image.new("RGB", (16, 16), (128,) * 3), Image.new("RGB", (16, 16), (153,) * 3)
        >>> round(recovery_scores([recovered], [clean], metrics=("psnr",))["psnr"][0], 3)  # 20·log10(255/25)
        20.172
    """
    if len(recovered) != len(references):
        raise ValueError(f"Got {len(recovered)} recovered images for {len(references)} references.")
    unknown = set(metrics) - set(RECOVERY_METRICS)
    if unknown:
        raise ValueError(f"Unknown recovery metrics {sorted(unknown)}; expected a subset of {RECOVERY_METRICS}.")
    lpips = load_lpips(lpips_net, allow_download=allow_download) if "lpips" in metrics else None
    scores: dict[str, list[float]] = {name: [] for name in metrics}
    for restored_image, reference_image in zip(recovered, references, strict=True):
        target = to_float_tensor(reference_image)[None]
        prediction = _match_size(to_float_tensor(restored_image), target.shape[-2:])[None]
        # float64: float32 SSIM of flat regions is off by ~1e-4 (E[x²] − μ² cancellation).
        if "psnr" in scores:
            scores["psnr"].append(peak_signal_noise_ratio(prediction.double(), target.double(), data_range=1.0).item())
        if "ssim" in scores:
            scores["ssim"].append(structural_similarity(prediction[0], target[0]).item())
        if lpips is not None:
            with torch.inference_mode():
                scores["lpips"].append(lpips(prediction, target).item())
            lpips.reset()
    return scores


def recovery_metrics(
    recovered: Sequence[Image.Image | np.ndarray | torch.Tensor],
    references: Sequence[Image.Image | np.ndarray | torch.Tensor],
    *,
    metrics: Sequence[str] = RECOVERY_METRICS,
    lpips_net: str = "alex",
    allow_download: bool = False,
) -> dict[str, float]:
    """Mean PSNR / SSIM / LPIPS over a set of recovered images.

    Example:
        >>> recovery_metrics(recovered_images, clean_images, metrics=("psnr", "ssim"))  # doctest: +SKIP
        {'psnr': 21.49, 'ssim': 0.6314}
    """
    per_image = recovery_scores(
        recovered, references, metrics=metrics, lpips_net=lpips_net, allow_download=allow_download
    )
    return {name: float(np.mean(values)) for name, values in per_image.items()}


def evaluate_recovery(
    recover_fn: Recoverer | Callable[[Sequence[Image.Image]], list[Image.Image]],
    corrupted: Sequence[Image.Image],
    clean: Sequence[Image.Image],
    *,
    batch_size: int = 4,
    metrics: Sequence[str] = RECOVERY_METRICS,
    lpips_net: str = "alex",
    allow_download: bool = False,
    progress: bool = True,
) -> dict[str, float]:
    """Recover ``corrupted`` in batches with ``recover_fn`` and score the results against ``clean``.

    LPIPS weights are checked before any recovery runs, so a missing file fails fast.

    Example:
        >>> evaluate_recovery(lambda images: [image.copy() for image in images], corrupted, clean)  # doctest: +SKIP
        {'psnr': 14.37, 'ssim': 0.4722, 'lpips': 0.5092}
    """
    if len(corrupted) != len(clean):
        raise ValueError(f"Got {len(corrupted)} corrupted images for {len(clean)} clean ones.")
    if "lpips" in metrics:
        load_lpips(lpips_net, allow_download=allow_download)
    recovered: list[Image.Image] = []
    for start in tqdm(range(0, len(corrupted), batch_size), desc="recovering", disable=not progress, unit="batch"):
        batch = list(corrupted[start : start + batch_size])
        outputs = recover_fn(batch)
        if len(outputs) != len(batch):
            raise ValueError(f"recover_fn returned {len(outputs)} images for a batch of {len(batch)}.")
        recovered.extend(outputs)
    return recovery_metrics(recovered, clean, metrics=metrics, lpips_net=lpips_net, allow_download=allow_download)


def _match_size(image: torch.Tensor, size: torch.Size) -> torch.Tensor:
    if image.shape[-2:] == size:
        return image
    resized = torch.nn.functional.interpolate(image[None], size=tuple(size), mode="bicubic", align_corners=False)
    return resized[0].clamp(0.0, 1.0)
