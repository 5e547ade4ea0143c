"""The 16 Robust-R1 degradations, each a function of a continuous intensity i in [0, 1].

Formulas and constants follow the official script (jqtangust/Robust-R1,
``add_degradation/add_degradation.py``) so data built here matches Robust-R1's training data and
its 25 / 50 / 100 % benchmarks (i = 0.23 / 0.45 / 0.9). We fix what made it unusable as a library:

* it drew from Python's and numpy's global RNGs; here every draw comes from the caller's
  ``numpy.random.Generator``. Each operation draws a fixed number of values whatever i is
  ("common random numbers"), so with one seed a stronger intensity damages the same places more;
* it crashed on images smaller than its fixed pixel sizes (``watermark_damage`` below 50 px,
  ``block_exchange`` below one block); here positions and blocks are clamped to the image;
* ``mean_shift`` ran OpenCV's mean-shift at full resolution (up to a minute per 1024² image);
  here large settings run on a downscaled copy, with the spatial radius scaled to match, then
  resize back (edges come out slightly softer than at full resolution);
* it worked in OpenCV's BGR order; here images are RGB and coloured marks keep their official
  colour (red graffiti text, white-blue flares).

Sizes (blob radii, scan-line spacing, block sizes) are in pixels, as in the official script, which
was tuned for images of roughly 0.3-1 megapixel.

Sampling weights: the official script draws one operation per image with these weights; every
family sums to 100, so the four families (capture, transmission, environment, post) are equally
likely and operations are equally likely within a family (33/33/34 for the three post ones).

Every function takes an RGB uint8 (H, W, 3) array, an intensity and a Generator, and returns an
RGB uint8 array of the same shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cv2
import numpy as np

FAMILIES: dict[str, tuple[str, ...]] = {
    "capture": ("lens_blur", "lens_flare", "motion_blur", "dirty_lens", "hsv_saturation"),
    "transmission": ("jpeg_compression", "block_exchange", "mean_shift", "scan_lines"),
    "environment": (
        "dark_illumination",
        "atmospheric_turbulence",
        "gaussian_noise",
        "color_diffusion",
    ),
    "post": ("sharpness_change", "graffiti", "watermark_damage"),
}
NAMES: tuple[str, ...] = tuple(name for family in FAMILIES.values() for name in family)
OFFICIAL_WEIGHTS: dict[str, float] = {
    **{name: 20.0 for name in FAMILIES["capture"]},
    **{name: 25.0 for name in FAMILIES["transmission"]},
    **{name: 25.0 for name in FAMILIES["environment"]},
    "sharpness_change": 33.0,
    "graffiti": 33.0,
    "watermark_damage": 34.0,
}
PRESETS: dict[int, float] = {25: 0.23, 50: 0.45, 100: 0.9}

Operation = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


def _to_uint8(values: np.ndarray) -> np.ndarray:
    # Clip then truncate, as the official script's .astype(np.uint8) does.
    return np.clip(values, 0, 255).astype(np.uint8)


def _points(rng: np.random.Generator, count: int, width: int, height: int) -> np.ndarray:
    """``count`` random (x, y) points with 0 <= x <= width and 0 <= y <= height."""
    return np.stack([rng.integers(0, width + 1, count), rng.integers(0, height + 1, count)], axis=1)


def _first(count: int, *draws: np.ndarray) -> Iterator[tuple]:
    """The first ``count`` marks of parallel per-mark draws (made for the maximum count)."""
    return zip(*(draw[:count] for draw in draws))


def _xy(point: np.ndarray) -> tuple[int, int]:
    return int(point[0]), int(point[1])


# ----------------------------------------------------------------------------- capture


def lens_blur(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Out-of-focus lens: blend with a Gaussian blur of sigma 20 i. The official weights
    (1 - 0.7 i for the image, 0.9 i for the blur) sum above 1, so it also brightens slightly.

    The official arithmetic is kept exactly: a 2-D kernel of ``int(3 + 300 i) | 1`` taps (the outer
    product of OpenCV's 1-D Gaussian) filters the image in float32, the blur is truncated to uint8
    (``astype``, not rounded), and ``cv2.addWeighted`` rounds the blend. Blurring the uint8 image
    directly would round instead and shift values by up to 2 levels.

    Example:
        >>> lens_blur(np.zeros((8, 8, 3), np.uint8), 0.45, np.random.default_rng(0)).shape
        (8, 8, 3)
    """
    if intensity <= 0:  # weight 1 on the image and 0 on the blur: the image itself
        return rgb.copy()
    taps = cv2.getGaussianKernel(int(3 + intensity * 300) | 1, intensity * 20)
    blurred = cv2.filter2D(rgb.astype(np.float32), -1, taps @ taps.T)
    return cv2.addWeighted(rgb, 1 - 0.7 * intensity, blurred.astype(np.uint8), 0.9 * intensity, 0)


_MAX_FLARES = 33


def lens_flare(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """3 + 30 i bright discs (radius 10-50 px) with short rays, added at weight 0.9 i.

    Example:
        >>> bool(lens_flare(np.zeros((8, 8, 3), np.uint8), 0.9, np.random.default_rng(0)).any())
        True
    """
    height, width = rgb.shape[:2]
    centres = _points(rng, _MAX_FLARES, width, height)
    radii = rng.integers(10, 51, _MAX_FLARES)
    angles = rng.uniform(0, 2 * np.pi, _MAX_FLARES)
    lengths = rng.integers(30, 151, _MAX_FLARES)
    flare = np.zeros((height, width, 3), np.float32)
    colour = (235.0, 255.0, 255.0)
    for centre, radius, angle, length in _first(
        3 + int(30 * intensity), centres, radii, angles, lengths
    ):
        end = centre + length * np.array([np.cos(angle), np.sin(angle)])
        cv2.circle(flare, _xy(centre), int(radius), colour, -1)
        cv2.line(flare, _xy(centre), _xy(end), colour, 2)
    flare = cv2.GaussianBlur(flare, (3, 3), 20 * intensity)
    return _to_uint8(rgb + 0.9 * intensity * flare)


def motion_blur(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Linear camera shake: a line kernel of max(5, 30 i) px at a random angle.

    Example:
        >>> motion_blur(np.zeros((8, 8, 3), np.uint8), 0.45, np.random.default_rng(0)).shape
        (8, 8, 3)
    """
    length = max(5, int(30 * intensity))
    angle = rng.uniform(0, 360)
    rotation = cv2.getRotationMatrix2D((length / 2, length / 2), angle, 1)
    kernel = cv2.warpAffine(np.diag(np.ones(length)), rotation, (length, length))
    return cv2.filter2D(rgb, -1, kernel / kernel.sum())


_MAX_SMUDGES, _MAX_SPOTS, _MAX_BLOTS = 10, 300, 5


def dirty_lens(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Grey dirt on the lens: 10 i large smudges (above i = 0.1), 300 i spots, 5 i heavy blots
    (above i = 0.5), blurred (sigma 30 px) and blended in at 0.8 i while the image fades by 0.7 i.

    Example:
        >>> dirty_lens(np.zeros((8, 8, 3), np.uint8), 0.45, np.random.default_rng(0)).shape
        (8, 8, 3)
    """
    height, width = rgb.shape[:2]
    smudge_centres = _points(rng, _MAX_SMUDGES, width, height)
    smudge_axes = np.stack(
        [rng.integers(150, 301, _MAX_SMUDGES), rng.integers(100, 201, _MAX_SMUDGES)], axis=1
    )
    smudge_angles = rng.integers(0, 181, _MAX_SMUDGES)
    spot_centres = _points(rng, _MAX_SPOTS, width, height)
    spot_radii = rng.integers(4, 21, _MAX_SPOTS)
    spot_shades = rng.integers(50, 101, _MAX_SPOTS)
    blot_centres = _points(rng, _MAX_BLOTS, width, height)
    blot_radii = np.stack(
        [rng.integers(20, 51, _MAX_BLOTS), rng.integers(10, 31, _MAX_BLOTS)], axis=1
    )

    # The official dirt is grey (equal channels), so one channel is drawn and blurred.
    dirt = np.zeros((height, width), np.float32)
    smudges = int(10 * intensity) if intensity > 0.1 else 0
    for centre, axes, angle in _first(smudges, smudge_centres, smudge_axes, smudge_angles):
        cv2.ellipse(dirt, _xy(centre), _xy(axes), int(angle), 0, 360, 50, -1)
    for centre, radius, shade in _first(
        int(300 * intensity), spot_centres, spot_radii, spot_shades
    ):
        cv2.circle(dirt, _xy(centre), int(radius), int(shade), -1)
    blots = int(5 * intensity) if intensity > 0.5 else 0
    for centre, (outer, inner) in _first(blots, blot_centres, blot_radii):
        cv2.circle(dirt, _xy(centre), int(outer), 80, -1)
        cv2.circle(dirt, _xy(centre), int(inner), 120, -1)
    dirt = cv2.GaussianBlur(dirt, (0, 0), 30).astype(np.uint8)
    return cv2.addWeighted(rgb, 1 - 0.7 * intensity, cv2.merge([dirt] * 3), 0.8 * intensity, 0)


def hsv_saturation(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Washed-out colour: HSV saturation times (1 - i).

    Example:
        >>> hsv_saturation(np.full((2, 2, 3), (200, 0, 0), np.uint8), 1.0, None)[0, 0]
        array([200, 200, 200], dtype=uint8)
    """
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] *= 1 - intensity
    return cv2.cvtColor(_to_uint8(hsv), cv2.COLOR_HSV2RGB)


# ----------------------------------------------------------------------------- transmission


def jpeg_quality(intensity: float) -> int:
    """JPEG quality used at ``intensity``: int(100 - 95 i), kept in [5, 100].

    Example:
        >>> jpeg_quality(0.45)
        57
    """
    return max(5, min(100, int(100 - 95 * intensity)))


def jpeg_compression(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """JPEG round trip (OpenCV encoder, as the official script) at quality 100 - 95 i.

    Example:
        >>> jpeg_compression(np.zeros((8, 8, 3), np.uint8), 0.9, None).shape
        (8, 8, 3)
    """
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    _, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality(intensity)])
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


_MAX_EXCHANGES = 35


def block_exchange(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Packet loss: swap 35 i pairs of square blocks (side min(32, 5 + 30 i) px, clamped to the
    image) on the block grid.

    Example:
        >>> block_exchange(np.zeros((8, 8, 3), np.uint8), 0.9, np.random.default_rng(0)).shape
        (8, 8, 3)
    """
    height, width = rgb.shape[:2]
    block = max(1, min(32, int(5 + 30 * intensity), height, width))
    grid = np.array([height // block, width // block] * 2)
    picks = (rng.random((_MAX_EXCHANGES, 4)) * grid).astype(int) * block
    exchanged = rgb.copy()
    for y1, x1, y2, x2 in picks[: int(35 * intensity)]:
        first = exchanged[y1 : y1 + block, x1 : x1 + block].copy()
        exchanged[y1 : y1 + block, x1 : x1 + block] = exchanged[y2 : y2 + block, x2 : x2 + block]
        exchanged[y2 : y2 + block, x2 : x2 + block] = first
    return exchanged


# pyrMeanShiftFiltering costs ~30 ns per pixel per squared spatial radius: at full resolution a
# 1024² image at i = 0.9 (radius 36) takes about a minute. Above this budget of pixels x radius²
# (~50 ms) the filter runs on a downscaled copy.
_MEAN_SHIFT_BUDGET = 1.5e6


def mean_shift(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Posterised, flat-colour regions: OpenCV mean-shift filtering with spatial and colour radius
    40 i. When pixels x radius² exceeds 1.5 M, it filters a copy downscaled by
    s = (1.5 M / (pixels x radius²))^(1/4) with spatial radius s x 40 i (the colour radius is
    unchanged) and resizes the result back, so a 1024² image takes ~0.05 s instead of ~1 min;
    region edges come out slightly softer than at full resolution.

    Example:
        >>> mean_shift(np.zeros((8, 8, 3), np.uint8), 0.45, None).shape
        (8, 8, 3)
    """
    radius = int(40 * intensity)
    if radius == 0:
        return rgb.copy()
    height, width = rgb.shape[:2]
    scale = min(1.0, (_MEAN_SHIFT_BUDGET / (height * width * radius**2)) ** 0.25)
    if scale == 1.0:
        return cv2.pyrMeanShiftFiltering(rgb, radius, radius)
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(rgb, small_size, interpolation=cv2.INTER_AREA)
    filtered = cv2.pyrMeanShiftFiltering(small, max(1.0, radius * scale), radius)
    return cv2.resize(filtered, (width, height), interpolation=cv2.INTER_LINEAR)


def scan_lines(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Dark horizontal bands: max(5, 7 i) rows every max(3, 20 / (i + 0.1)) rows, dimmed to 1 %.

    Example:
        >>> scan_lines(np.full((8, 8, 3), 255, np.uint8), 0.9, None)[:, 0, 0]
        array([  2,   2,   2,   2,   2,   2, 255, 255], dtype=uint8)
    """
    interval = max(3, int(20 / (intensity + 0.1)))
    line_width = max(5, int(7 * intensity))
    dimmed_rows = np.arange(rgb.shape[0]) % interval < line_width
    lined = rgb.copy()
    lined[dimmed_rows] = (lined[dimmed_rows] * 0.01).astype(np.uint8)
    return lined


# ----------------------------------------------------------------------------- environment


def dark_illumination(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Under-exposure: every value times (1 - i²).

    Example:
        >>> dark_illumination(np.full((2, 2, 3), 200, np.uint8), 0.5, None)[0, 0]
        array([150, 150, 150], dtype=uint8)
    """
    return _to_uint8(rgb * (1 - intensity**2))


def atmospheric_turbulence(
    rgb: np.ndarray, intensity: float, rng: np.random.Generator
) -> np.ndarray:
    """Heat shimmer: rows shift by 40 i sin(y / 30 + 5 i) px sideways and 0.7 times that
    vertically. Deterministic, as in the official script.

    Example:
        >>> atmospheric_turbulence(np.zeros((8, 8, 3), np.uint8), 0.45, None).shape
        (8, 8, 3)
    """
    height, width = rgb.shape[:2]
    rows = np.arange(height, dtype=np.float64)[:, None]
    columns = np.arange(width, dtype=np.float64)[None, :]
    distortion = intensity * 40 * np.sin(rows / 30 + intensity * 5)
    map_x = np.clip(columns + distortion, 0, width - 1).astype(np.float32)
    map_y = np.clip(rows + 0.7 * distortion, 0, height - 1).astype(np.float32)
    map_y = np.ascontiguousarray(np.broadcast_to(map_y, map_x.shape))
    return cv2.remap(rgb, map_x, map_y, cv2.INTER_LINEAR)


def gaussian_noise(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise: additive Gaussian noise with sigma 75 i (0-255 scale).

    Example:
        >>> gaussian_noise(np.zeros((8, 8, 3), np.uint8), 0.0, np.random.default_rng(0)).max()
        np.uint8(0)
    """
    noise = rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(75 * intensity)
    return _to_uint8(rgb + noise)


_MAX_DROPS = 100


def color_diffusion(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Colour bleeding: blend with a Gaussian blur (kernel 3 + 2 int(20 i), sigma 50 i) that the
    official script scales by i², so stronger settings also darken; above i = 0.9, 100 i random
    grey drops (radius 5-20 px) are stamped into the blurred layer.

    Example:
        >>> color_diffusion(np.full((8, 8, 3), 100, np.uint8), 0.45, np.random.default_rng(0))[0, 0]
        array([68, 68, 68], dtype=uint8)
    """
    height, width = rgb.shape[:2]
    drop_centres = _points(rng, _MAX_DROPS, width - 1, height - 1)
    drop_radii = rng.integers(5, 20, _MAX_DROPS)
    drop_shades = rng.integers(0, 255, _MAX_DROPS)

    kernel_size = 3 + 2 * int(intensity * 20)
    diffused = cv2.GaussianBlur(
        rgb.astype(np.float32), (kernel_size, kernel_size), 50 * intensity
    ) * np.float32(intensity**2)
    drops = int(100 * intensity) if intensity > 0.9 else 0
    for centre, radius, shade in _first(drops, drop_centres, drop_radii, drop_shades):
        cv2.circle(diffused, _xy(centre), int(radius), (float(shade),) * 3, -1)
    return cv2.addWeighted(
        rgb,
        max(0.1, 1 - intensity * 0.9),
        diffused.astype(np.uint8),
        min(0.9, intensity * 0.9),
        0,
    )


# ----------------------------------------------------------------------------- post-processing


_SHARPEN_KERNEL = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float64)


def sharpness_change(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Over-sharpening: 30 % of a sharpened copy whose kernel is scaled by 80 i (as in the
    official script, so most pixels saturate even at low i and damage grows slowly with i);
    i = 0 blends a 3x3 Gaussian blur instead, the official script's branch for i <= 0.

    Example:
        >>> sharpness_change(np.full((4, 4, 3), 100, np.uint8), 0.45, None)[0, 0]
        array([146, 146, 146], dtype=uint8)
    """
    if intensity > 0:
        changed = cv2.filter2D(rgb, -1, _SHARPEN_KERNEL * (intensity * 80))
    else:
        changed = cv2.GaussianBlur(rgb, (3, 3), 0)
    return cv2.addWeighted(rgb, 0.7, changed, 0.3, 0)


_MAX_STROKES = 10
_GRAFFITI_WORDS = ("X", "FAKE", "COPY", "VOID", "COPYRIGHT")


def graffiti(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Vandalised image: 10 i random coloured strokes (up to 5 i px thick) and, above i = 0.55, a
    red word (scale 5 i) when the image is tall enough to hold it.

    Example:
        >>> bool(graffiti(np.zeros((64, 64, 3), np.uint8), 0.9, np.random.default_rng(0)).any())
        True
    """
    height, width = rgb.shape[:2]
    colours = rng.integers(0, 256, (_MAX_STROKES, 3))
    starts = _points(rng, _MAX_STROKES, width - 1, height - 1)
    ends = _points(rng, _MAX_STROKES, width - 1, height - 1)
    thickness_draws = rng.random(_MAX_STROKES)
    word_index, number = rng.integers(len(_GRAFFITI_WORDS) + 1), rng.integers(1, 101)
    text_x_draw, text_y_draw = rng.random(2)

    marked = rgb.copy()
    max_thickness = max(1, int(5 * intensity))
    strokes = _first(int(10 * intensity), colours, starts, ends, thickness_draws)
    for colour, start, end, thickness_draw in strokes:
        thickness = 1 + int(thickness_draw * max_thickness)
        cv2.line(marked, _xy(start), _xy(end), tuple(int(c) for c in colour), thickness)

    if intensity > 0.55:
        text = (*_GRAFFITI_WORDS, str(number))[word_index]
        scale = max(0.5, intensity * 5)
        stroke = max(1, int(scale))
        (text_width, text_height), _ = cv2.getTextSize(
            text, cv2.FONT_HERSHEY_SIMPLEX, scale, stroke
        )
        if height - 10 > text_height + 10:
            x = int(text_x_draw * (max(1, width - text_width - 10) + 1))
            y = text_height + 10 + int(text_y_draw * (height - 19 - text_height))
            cv2.putText(marked, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 0, 0), stroke)
    return marked


_MAX_WATERMARKS = 16


def watermark_damage(rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Removed watermarks: 1 + 15 i rectangles (50-200 x 20-80 px) are inpainted (Telea) and
    blended in at weight i; above i = 0.5 their outlines are darkened to 80 %.

    Example:
        >>> watermark_damage(np.zeros((8, 8, 3), np.uint8), 0.45, np.random.default_rng(0)).shape
        (8, 8, 3)
    """
    height, width = rgb.shape[:2]
    # The official script draws corners in [0, side - 50], which fails below 50 px: clamp at 0.
    corners = np.stack(
        [
            rng.integers(0, max(0, width - 50) + 1, _MAX_WATERMARKS),
            rng.integers(0, max(0, height - 50) + 1, _MAX_WATERMARKS),
        ],
        axis=1,
    )
    sizes = np.stack(
        [rng.integers(50, 201, _MAX_WATERMARKS), rng.integers(20, 81, _MAX_WATERMARKS)], axis=1
    )
    mask = np.zeros((height, width), np.uint8)
    for corner, size in _first(int(1 + intensity * 15), corners, sizes):
        cv2.rectangle(mask, _xy(corner), _xy(corner + size), 255, -1)
    repaired = cv2.inpaint(rgb, mask, 3, cv2.INPAINT_TELEA)
    damaged = cv2.addWeighted(rgb, 1 - intensity, repaired, intensity, 0)
    if intensity > 0.5:
        outline = cv2.Canny(mask, 50, 150) > 0
        damaged[outline] = (damaged[outline] * 0.8).astype(np.uint8)
    return damaged


OPERATIONS: dict[str, Operation] = {
    "lens_blur": lens_blur,
    "lens_flare": lens_flare,
    "motion_blur": motion_blur,
    "dirty_lens": dirty_lens,
    "hsv_saturation": hsv_saturation,
    "jpeg_compression": jpeg_compression,
    "block_exchange": block_exchange,
    "mean_shift": mean_shift,
    "scan_lines": scan_lines,
    "dark_illumination": dark_illumination,
    "atmospheric_turbulence": atmospheric_turbulence,
    "gaussian_noise": gaussian_noise,
    "color_diffusion": color_diffusion,
    "sharpness_change": sharpness_change,
    "graffiti": graffiti,
    "watermark_damage": watermark_damage,
}


def apply(name: str, rgb: np.ndarray, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Apply Robust-R1 operation ``name`` at ``intensity`` to an RGB uint8 array.

    Example:
        >>> apply("dark_illumination", np.full((2, 2, 3), 200, np.uint8), 0.5, None)[0, 0]
        array([150, 150, 150], dtype=uint8)
    """
    return OPERATIONS[name](rgb, intensity, rng)
