"""Stage II rewards of Robust-U1: structural (SSIM) and semantic (CLIP) similarity to the clean image.

Rewards follow TRL's calling convention: they are called with keyword arguments only — ``images`` (the
recovered images), ``prompts`` and every dataset column as a list (notably ``target_image``, the clean
reference) — and return one float (or ``None`` when a sample cannot be scored) per image. Any callable
with that signature is a valid reward; :func:`compute_rewards` evaluates and weights a list of them.

Images follow the library's one image-input rule (`robust_u1.image_utils`): PIL images, numpy arrays
``HWC``/``HW``, tensors ``CHW``/``HW``, or file paths (references), plus whole ``BCHW`` tensors / ``BHWC``
arrays as batches. Float images must be finite and in [0, 1]: a float image in 0..255 or with NaN is a
``ValueError`` naming the fix, never clamped into a wrong score.

Example:
    >>> reward_funcs, reward_weights = official_rewards(device="cuda")
    >>> per_func, weighted = compute_rewards(
    ...     reward_funcs, reward_weights, images=recovered, prompts=prompts, target_image=clean
    ... )
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .image_metrics import SSIM_SIGMA, SSIM_WINDOW, structural_similarity
from .image_utils import to_float_tensor, to_rgb_image

__all__ = [
    "OFFICIAL_REWARD_WEIGHTS",
    "CLIPSimilarityReward",
    "RewardFunctionError",
    "SSIMReward",
    "compute_rewards",
    "official_rewards",
    "reward_name",
]

logger = logging.getLogger(__name__)

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor, str, os.PathLike]
RewardFunction = Callable[..., Sequence[Union[float, None]]]

# Official Robust-U1 reward weights (restoration = SSIM, clip = CLIP similarity).
OFFICIAL_REWARD_WEIGHTS: dict[str, float] = {"restoration": 1.0, "clip": 0.2}


class RewardFunctionError(RuntimeError):
    """A reward function raised or returned a malformed result; the training step stops with this error.

    ``reward_name`` names the failing function; the original exception, if any, is ``__cause__``.
    """

    def __init__(self, reward_name: str, message: str) -> None:
        super().__init__(f"reward function {reward_name!r}: {message}")
        self.reward_name = reward_name


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _image_list(images: Sequence[ImageLike | None] | torch.Tensor | np.ndarray) -> list[ImageLike | None]:
    """Split a batch (list, ``BCHW`` tensor or ``BHWC`` array) into a list of single images."""
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        return list(images)
    if isinstance(images, (Image.Image, torch.Tensor, np.ndarray, str, os.PathLike)):
        raise TypeError(f"expected a batch of images (list or 4-D tensor), got a single {type(images).__name__}")
    return list(images)


def _references(kwargs: dict[str, Any], column: str, batch_size: int) -> list[ImageLike | None]:
    if column not in kwargs:
        raise KeyError(f"needs the dataset column {column!r} (clean reference images); got {sorted(kwargs)}")
    references = _image_list(kwargs[column])
    if len(references) != batch_size:
        raise ValueError(f"{batch_size} images but {len(references)} entries in {column!r}")
    return references


class SSIMReward:
    """Pixel-structure reward ``R_pix = SSIM(output, clean)``.

    SSIM is the library's one definition (`robust_u1.image_metrics.structural_similarity`, also used by
    the evaluation): Gaussian window σ = 1.5, 11 × 11 taps, mean over the valid region, as scikit-image
    (``gaussian_weights=True, use_sample_covariance=False, data_range=1``) and pytorch-msssim compute it.
    The reference is resized to the output's size with bilinear interpolation (``align_corners=False``,
    no antialiasing), as the official Robust-U1 reward does. Images smaller than ``win_size`` pixels on a
    side raise ``ValueError`` (pytorch-msssim would silently skip smoothing). A ``None`` image or reference
    gives a ``None`` reward. Images are read with the library's input rule: a float image outside
    [0, 1] (e.g. in 0..255) or with NaN raises ``ValueError``, it is never clamped.

    Example:
        >>> reward = SSIMReward(device="cpu")
        >>> clean = torch.rand(3, 64, 64)
        >>> reward(images=[clean], prompts=["p"], target_image=[clean])
        [1.0]
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        data_range: float = 1.0,
        win_size: int = SSIM_WINDOW,
        reference_column: str = "target_image",
        name: str = "restoration",
    ) -> None:
        self.device = torch.device(device) if device is not None else _default_device()
        self.data_range = data_range
        self.win_size = win_size
        self.reference_column = reference_column
        self.name = self.__name__ = name  # __name__ is what TRL logs for non-module rewards

    def score(self, image: ImageLike, reference: ImageLike) -> float:
        """SSIM of one image against its reference (resized to the image's size)."""
        output = to_float_tensor(image)
        target = to_float_tensor(reference)
        height, width = output.shape[-2:]
        if min(height, width) < self.win_size:
            raise ValueError(
                f"image of {height}x{width} px is smaller than the {self.win_size}-px SSIM window; "
                "use a smaller win_size (odd) or larger images"
            )
        if target.shape[-2:] != output.shape[-2:]:
            target = F.interpolate(target[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        value = structural_similarity(
            output.to(self.device), target.to(self.device), data_range=self.data_range, win_size=self.win_size,
            sigma=SSIM_SIGMA,
        )  # fmt: skip
        return float(value)

    def __call__(self, images: Sequence[ImageLike | None], **kwargs: Any) -> list[float | None]:
        outputs = _image_list(images)
        references = _references(kwargs, self.reference_column, len(outputs))
        return [
            None if output is None or reference is None else self.score(output, reference)
            for output, reference in zip(outputs, references)
        ]


class CLIPSimilarityReward:
    """Semantic reward ``R_sem = exp(-alpha * (1 - clamp(cos, 0, 1)))`` between CLIP image embeddings.

    Embeddings are L2-normalised; ``alpha = 5`` and open_clip ``ViT-B-32`` / ``"openai"`` are the official
    defaults. ``pretrained`` is any open_clip tag, a local ``.bin``/``.pt``/``.safetensors`` file, or
    ``None`` for random weights. A ready model can be passed as ``model`` with its ``processor``: an
    open_clip model with its preprocess transform, or a transformers ``CLIPModel`` (e.g. TinyCLIP) with its
    ``CLIPProcessor``/``CLIPImageProcessor``; :meth:`from_transformers` loads the latter from a folder.
    The open_clip model loads on the first call or on :meth:`load`; models are moved to ``device``
    (default: CUDA when available). Images are converted to PIL and
    preprocessed as the official code does, then encoded in batches of ``batch_size`` under ``no_grad``.

    Example:
        >>> reward = CLIPSimilarityReward(model_name="ViT-S-32", pretrained=None, device="cpu")
        >>> image = torch.rand(3, 64, 64)
        >>> round(reward(images=[image], target_image=[image])[0], 4)
        1.0
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "openai",
        alpha: float = 5.0,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        model: torch.nn.Module | None = None,
        processor: Callable[..., Any] | None = None,
        cache_dir: str | None = None,
        reference_column: str = "target_image",
        name: str = "clip",
    ) -> None:
        if (model is None) != (processor is None):
            raise ValueError("pass model and processor together (open_clip preprocess or transformers processor)")
        self.model_name = model_name
        self.pretrained = pretrained
        self.alpha = alpha
        self.device = torch.device(device) if device is not None else _default_device()
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.reference_column = reference_column
        self.name = self.__name__ = name  # __name__ is what TRL logs for non-module rewards
        self.model = model.to(self.device).eval() if model is not None else None
        self.processor = processor

    @classmethod
    def from_transformers(cls, path: str | os.PathLike, **kwargs: Any) -> CLIPSimilarityReward:
        """Load a transformers ``CLIPModel`` folder or Hub id (e.g. ``wkcn/TinyCLIP-ViT-8M-16-Text-3M-YFCC15M``).

        Example:
            >>> reward = CLIPSimilarityReward.from_transformers("/models/TinyCLIP-ViT-8M-16", device="cuda")
        """
        from transformers import CLIPImageProcessor, CLIPModel

        return cls(model=CLIPModel.from_pretrained(path), processor=CLIPImageProcessor.from_pretrained(path), **kwargs)

    def load(self) -> CLIPSimilarityReward:
        """Create the open_clip model now (otherwise it is created on the first call); returns ``self``."""
        if self.model is None:
            import open_clip

            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model_name, pretrained=self.pretrained, device=self.device, cache_dir=self.cache_dir
            )
            self.model, self.processor = model.eval(), preprocess
        return self

    @torch.no_grad()
    def encode(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """L2-normalised fp32 image embeddings ``[N, D]``, computed in batches of ``batch_size``."""
        self.load()
        dtype = next(self.model.parameters()).dtype
        embeddings = []
        for start in range(0, len(images), self.batch_size):
            # Floats are rounded to uint8, as the official reward does; out-of-range floats raise.
            chunk = [to_rgb_image(image) for image in images[start : start + self.batch_size]]
            if hasattr(self.model, "get_image_features"):  # transformers CLIPModel
                pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"]
                features = self.model.get_image_features(pixel_values=pixels.to(self.device, dtype))
                # transformers >= 5 returns the projected embedding as pooler_output of a model output.
                features = features if isinstance(features, torch.Tensor) else features.pooler_output
            else:  # open_clip
                pixels = torch.stack([self.processor(image) for image in chunk])
                features = self.model.encode_image(pixels.to(self.device, dtype))
            embeddings.append(F.normalize(features.float(), dim=-1))
        return torch.cat(embeddings)

    def __call__(self, images: Sequence[ImageLike | None], **kwargs: Any) -> list[float | None]:
        outputs = _image_list(images)
        references = _references(kwargs, self.reference_column, len(outputs))
        scored = [i for i, (out, ref) in enumerate(zip(outputs, references)) if out is not None and ref is not None]
        rewards: list[float | None] = [None] * len(outputs)
        if not scored:
            return rewards
        embeddings = self.encode([outputs[i] for i in scored] + [references[i] for i in scored])
        output_embeddings, reference_embeddings = embeddings.split(len(scored))
        cosine = (output_embeddings * reference_embeddings).sum(dim=-1).clamp(0, 1)
        for index, value in zip(scored, torch.exp(-self.alpha * (1 - cosine)).tolist()):
            rewards[index] = value
        return rewards


def official_rewards(device: str | torch.device | None = None) -> tuple[list[RewardFunction], list[float]]:
    """The official Robust-U1 rewards and weights: SSIM (1.0) and CLIP ViT-B-32 ``openai`` (0.2).

    Example:
        >>> reward_funcs, reward_weights = official_rewards(device="cuda")
    """
    reward_funcs: list[RewardFunction] = [SSIMReward(device=device), CLIPSimilarityReward(device=device)]
    return reward_funcs, [OFFICIAL_REWARD_WEIGHTS[reward_name(func)] for func in reward_funcs]


def reward_name(reward_func: RewardFunction) -> str:
    """Logging name of a reward: its ``name`` attribute, else ``__name__``, else its class name."""
    return getattr(reward_func, "name", None) or getattr(reward_func, "__name__", None) or type(reward_func).__name__


def _reward_value(name: str, index: int, value: Any) -> float:
    """One reward as a float (NaN for None); anything but a real number is the reward function's error."""
    if value is None:
        return float("nan")
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise RewardFunctionError(
            name, f"returned {type(value).__name__} {value!r:.40} for sample {index}; rewards must be numbers (or None)"
        )
    return float(value)


def compute_rewards(
    reward_funcs: Sequence[RewardFunction],
    reward_weights: Sequence[float] | torch.Tensor | None = None,
    **batch: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Call every reward on the batch; return ``(per_func [B, F], weighted [B])`` as fp32 CPU tensors.

    ``batch`` holds the keyword arguments each reward receives (``images``, ``prompts``, dataset columns);
    its size is ``len(batch["images"])`` (else ``len(batch["prompts"])``). ``None`` rewards become NaN and
    are logged; the weighted reward is TRL's ``nansum`` of ``weight * reward`` over functions, and NaN only
    when every function returned ``None`` (an unscorable sample, which ``grpo_advantages`` excludes and
    gives advantage 0). ``reward_weights=None`` weights every function 1. A reward that raises, or returns
    a wrong number of values, raises :class:`RewardFunctionError` naming it: the step stops rather than
    training on silent zeros.

    Example:
        >>> per_func, weighted = compute_rewards(
        ...     [lambda images, **kw: [1.0, None]], [0.5], images=[object(), object()], prompts=["a", "b"]
        ... )
        >>> weighted
        tensor([0.5000,    nan])
    """
    if not reward_funcs:
        raise ValueError("compute_rewards needs at least one reward function")
    if reward_weights is None:
        weights = torch.ones(len(reward_funcs))
    else:
        weights = torch.as_tensor(reward_weights, dtype=torch.float32)
    if weights.shape != (len(reward_funcs),):
        raise ValueError(f"{len(reward_funcs)} reward functions but {weights.numel()} weights")
    batch_key = "images" if "images" in batch else "prompts"
    if batch_key not in batch:
        raise ValueError("compute_rewards needs an 'images' or 'prompts' batch column to know the batch size")
    batch_size = len(batch[batch_key])

    columns = []
    for reward_func in reward_funcs:
        name = reward_name(reward_func)
        try:
            outputs = reward_func(**batch)
        except Exception as error:
            raise RewardFunctionError(name, f"raised {type(error).__name__}: {error}") from error
        if isinstance(outputs, (str, bytes, dict)) or not hasattr(outputs, "__len__"):
            raise RewardFunctionError(name, f"returned a {type(outputs).__name__}; it must return a list of one number per sample")
        outputs = list(outputs.flatten() if isinstance(outputs, torch.Tensor) else outputs)
        if len(outputs) != batch_size:
            raise RewardFunctionError(name, f"returned {len(outputs)} rewards for a batch of {batch_size}")
        column = torch.tensor([_reward_value(name, index, value) for index, value in enumerate(outputs)], dtype=torch.float64)
        # ±inf (e.g. PSNR of a perfect sample) would turn every advantage of its group, then the weights,
        # into NaN: it is unscored like NaN/None (advantage 0) rather than stopping a run on one sample.
        infinite = int(column.isinf().sum())
        if infinite:
            logger.warning("reward %r: %d of %d samples were ±inf; they are left unscored like None/NaN", name, infinite, batch_size)
            column[column.isinf()] = float("nan")
        missing = int(column.isnan().sum())
        if missing:
            logger.warning("reward %r: %d of %d samples unscored (None/NaN/inf)", name, missing, batch_size)
        columns.append(column.float())

    per_func = torch.stack(columns, dim=1)
    weighted = (per_func * weights).nansum(dim=1)
    weighted[per_func.isnan().all(dim=1)] = float("nan")
    return per_func, weighted
