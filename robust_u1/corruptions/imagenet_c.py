"""The 19 ImageNet-C corruptions (Hendrycks & Dietterich, 2019), severity 1-5.

All of them come from the maintained ``imagecorruptions-imaug`` package (import name
``imagecorruptions``) and are called unchanged, except five whose slow paths took 0.3-1.3 s (up
to 2.6 s with numba's first compile) on a 1024² image; those are re-implemented here with OpenCV
or closed-form maths, draw the same random numbers, and match the package to PSNR >= 40 dB at the
same seed (see ``tests/test_corruptions_equivalence.py`` and ``benchmarks/bench_corruptions.py``).

Every function here takes an RGB uint8 (H, W, 3) array, a severity and a 32-bit seed, and returns
an RGB uint8 array of the same shape. Randomness is reproducible: the package's draws from numpy's
global RNG happen under :func:`~robust_u1.corruptions.seeding.seeded_global_numpy`, and ours come
from a local ``RandomState`` with the same seed, which yields the same stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import cv2
import imagecorruptions
import numpy as np
from imagecorruptions import corruptions as package
from PIL import Image

from .seeding import draw_seed, seeded_global_numpy

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
GROUPS: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra": ("speckle_noise", "gaussian_blur", "spatter", "saturate"),
}
COMMON: tuple[str, ...] = tuple(name for group in list(GROUPS.values())[:4] for name in group)
EXTRA: tuple[str, ...] = GROUPS["extra"]
NAMES: tuple[str, ...] = COMMON + EXTRA

# These package functions take the seed as an argument instead of reading numpy's global RNG.
_TAKES_SEED_ARGUMENT = {"impulse_noise", "glass_blur"}

# glass_blur's numba kernel costs ~2.5 s to compile in every new process; caching the compiled
# code on disk turns that into a one-off cost. The compiled code, and so the output, is unchanged.
# Without a writable cache location numba raises RuntimeError: then it compiles per process.
with contextlib.suppress(RuntimeError):
    package._shuffle_pixels_njit_glass_blur.enable_caching()

CorruptionFunction = Callable[[np.ndarray, int, int], np.ndarray]


def run_package_corruption(name: str, rgb: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Call ``imagecorruptions``' own implementation of ``name`` with a local seed.

    Example:
        >>> image = np.full((32, 32, 3), 128, np.uint8)
        >>> run_package_corruption("contrast", image, 3, seed=0).dtype
        dtype('uint8')
    """
    function = imagecorruptions.corruption_dict[name]
    keyword_seed = {"seed": seed} if name in _TAKES_SEED_ARGUMENT else {}
    with seeded_global_numpy(seed):
        corrupted = function(Image.fromarray(rgb), severity, **keyword_seed)
    return _as_uint8(np.asarray(corrupted))


def _as_uint8(values: np.ndarray) -> np.ndarray:
    # Clip then truncate, exactly as imagecorruptions.corrupt() does with np.uint8(...).
    return np.clip(values, 0, 255).astype(np.uint8)


def zoom_blur(rgb: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Average of centre zooms. Faster than the package (scipy.ndimage.zoom per zoom factor): one
    cv2.warpAffine per factor, using scipy's corner-aligned sampling grid so the output matches.

    Example:
        >>> zoom_blur(np.zeros((32, 32, 3), np.uint8), 1, seed=0).shape
        (32, 32, 3)
    """
    zoom_factors = [
        np.arange(1, 1.11, 0.01),
        np.arange(1, 1.16, 0.01),
        np.arange(1, 1.21, 0.02),
        np.arange(1, 1.26, 0.02),
        np.arange(1, 1.31, 0.03),
    ][severity - 1]
    image = rgb.astype(np.float32) / 255.0
    total = image.copy()
    for factor in zoom_factors:
        total += _centre_zoom(image, float(factor))
    return _as_uint8(np.clip(total / (len(zoom_factors) + 1), 0, 1) * 255)


def _centre_zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """Same result as imagecorruptions' ``clipped_zoom``: crop the centre 1/factor, zoom it back
    with scipy's default grid (input corners map to output corners), keep the top-left H x W."""
    height, width = image.shape[:2]
    affine = np.zeros((2, 3), np.float64)
    for axis, size in enumerate((height, width)):
        crop = int(np.ceil(size / factor))
        start = (size - crop) // 2
        zoomed = round(crop * factor)
        row = 1 - axis  # warpAffine's first row maps x (width), the second y (height)
        affine[row, row] = (crop - 1) / (zoomed - 1)
        affine[row, 2] = start
    return cv2.warpAffine(
        image,
        affine,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def brightness(rgb: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Raise HSV value by c. Faster than the package's skimage HSV round trip: with hue and
    saturation fixed, RGB scales linearly with V, so new RGB = RGB * V'/V (grey V' where V = 0).

    Example:
        >>> brightness(np.zeros((32, 32, 3), np.uint8), 5, seed=0)[0, 0]
        array([127, 127, 127], dtype=uint8)
    """
    shift = [0.1, 0.2, 0.3, 0.4, 0.5][severity - 1]
    value = _channel_extreme(rgb, cv2.max)
    new_value = np.minimum(value + np.float32(255 * shift), np.float32(255))
    black = value == 0
    ratio = new_value / np.where(black, np.float32(1), value)
    brightened = rgb * ratio[..., None]
    brightened[black] = new_value[black, None]
    return _as_uint8(brightened)


def saturate(rgb: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Scale HSV saturation: S' = clip(a S + b). Faster than the package's skimage HSV round trip:
    with hue and value fixed, each channel c moves along V - (S'/S)(V - c); grey pixels (S = 0)
    have hue 0 in skimage, so they become (V, V(1 - S'), V(1 - S')).

    Example:
        >>> saturate(np.full((32, 32, 3), 200, np.uint8), 5, seed=0)[0, 0]
        array([200, 160, 160], dtype=uint8)
    """
    scale, offset = [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)][severity - 1]
    value = _channel_extreme(rgb, cv2.max)
    spread = value - _channel_extreme(rgb, cv2.min)
    grey = spread == 0
    saturation = spread / np.where(grey, np.float32(1), value)
    new_saturation = np.clip(saturation * np.float32(scale) + np.float32(offset), 0, 1)
    gain = np.where(grey, np.float32(0), new_saturation / np.where(grey, np.float32(1), saturation))
    saturated = value[..., None] - gain[..., None] * (value[..., None] - rgb)
    saturated[grey, 1:] = (value[grey] * (1 - new_saturation[grey]))[:, None]
    return _as_uint8(saturated)


def _channel_extreme(rgb: np.ndarray, reduce: Callable) -> np.ndarray:
    """Per-pixel max or min over the RGB channels, as float32 (H, W)."""
    red, green, blue = cv2.split(rgb)
    return reduce(reduce(red, green), blue).astype(np.float32)


def elastic_transform(rgb: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Smooth random displacement field. Faster than the package (skimage gaussian on float64 and
    scipy map_coordinates over H x W x 3 coordinates): cv2.GaussianBlur with the same truncation
    and border, and one cv2.remap; the random field is drawn exactly as in the package.

    Example:
        >>> elastic_transform(np.zeros((32, 32, 3), np.uint8), 2, seed=0).shape
        (32, 32, 3)
    """
    alpha = [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12][severity - 1]
    image = rgb.astype(np.float32) / 255.0
    height, width = image.shape[:2]
    sigma_y, sigma_x = height * 0.01, width * 0.01
    max_shift = height * 0.005
    random_state = np.random.RandomState(seed)
    # Drawn in float64 like the package (same stream), smoothed in float32 (4x faster, same map).
    displacement = [
        random_state.uniform(-max_shift, max_shift, size=(height, width)).astype(np.float32)
        for _ in range(2)
    ]
    dx, dy = (
        _gaussian(field, sigma_y, sigma_x, truncate=3, border=cv2.BORDER_REFLECT)
        * np.float32(alpha)
        for field in displacement
    )
    columns, rows = np.meshgrid(
        np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    )
    warped = cv2.remap(
        image, columns + dx, rows + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    return _as_uint8(np.clip(warped, 0, 1) * 255)


def glass_blur(rgb: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Blur, locally shuffle pixels (the package's own numba kernel), blur again. Faster than the
    package: cv2.GaussianBlur replaces skimage's float64 gaussian (same kernel and border).

    Example:
        >>> glass_blur(np.zeros((32, 32, 3), np.uint8), 1, seed=0).shape
        (32, 32, 3)
    """
    sigma, max_delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][
        severity - 1
    ]
    blurred = np.uint8(_skimage_gaussian(rgb / 255.0, sigma) * 255)
    height, width = blurred.shape[:2]
    shuffled = package._shuffle_pixels_njit_glass_blur(
        height, width, blurred, (sigma, max_delta, iterations), seed
    )
    return _as_uint8(np.clip(_skimage_gaussian(shuffled / 255.0, sigma), 0, 1) * 255)


def _skimage_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    # skimage.filters.gaussian defaults: truncate 4, mode "nearest" (= BORDER_REPLICATE).
    return _gaussian(image, sigma, sigma, truncate=4, border=cv2.BORDER_REPLICATE)


def _gaussian(
    image: np.ndarray, sigma_y: float, sigma_x: float, truncate: float, border: int
) -> np.ndarray:
    """scipy.ndimage.gaussian_filter over the two spatial axes: radius = int(truncate*sigma+0.5)."""
    kernel_size = (2 * int(truncate * sigma_x + 0.5) + 1, 2 * int(truncate * sigma_y + 0.5) + 1)
    return cv2.GaussianBlur(image, kernel_size, sigmaX=sigma_x, sigmaY=sigma_y, borderType=border)


FAST_EQUIVALENTS: dict[str, CorruptionFunction] = {
    "zoom_blur": zoom_blur,
    "brightness": brightness,
    "saturate": saturate,
    "elastic_transform": elastic_transform,
    "glass_blur": glass_blur,
}


def apply(name: str, rgb: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Apply ImageNet-C corruption ``name`` to an RGB uint8 array, drawing its seed from ``rng``.

    Example:
        >>> image = np.full((32, 32, 3), 128, np.uint8)
        >>> apply("gaussian_noise", image, 2, np.random.default_rng(0)).shape
        (32, 32, 3)
    """
    seed = draw_seed(rng)
    fast = FAST_EQUIVALENTS.get(name)
    if fast is not None:
        return fast(rgb, severity, seed)
    return run_package_corruption(name, rgb, severity, seed)
