"""One registry and one call for both corruption families.

Names are namespaced by family: ``imagenet_c/<name>`` (severity 1-5) and ``robust_r1/<name>``
(intensity in [0, 1]). A bare name is accepted where it is unique; ``gaussian_noise``,
``motion_blur`` and ``jpeg_compression`` exist in both families and must be qualified.

Small images: every corruption sees at least 32 x 32 pixels (the minimum ``imagecorruptions``
documents). A smaller image (down to 1 x 1) is reflect-padded, centred, to 32 on each short side,
corrupted, and cropped back to its own size, so nothing is rejected for its size; an image with
no pixels raises ``ValueError``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from numbers import Real
from typing import Any, TypeVar, overload

import numpy as np

from . import imagenet_c, robust_r1
from .image_io import to_rgb
from .levels import LEVELS, parse_level
from .seeding import SeedLike, as_generator, draw_seed

ImageT = TypeVar("ImageT")
Strength = int | float
StrengthSpec = int | float | str

IMAGENET_C = "imagenet_c"
ROBUST_R1 = "robust_r1"
FAMILIES: tuple[str, ...] = (IMAGENET_C, ROBUST_R1)
MIN_SIDE = 32


@dataclass(frozen=True)
class Corruption:
    """A registered corruption: its family, name, group and the function that applies it."""

    family: str
    name: str
    group: str
    function: Callable[[np.ndarray, Strength, np.random.Generator], np.ndarray]

    @property
    def qualified_name(self) -> str:
        return f"{self.family}/{self.name}"

    @property
    def default_strengths(self) -> tuple[Strength, ...]:
        """Severities 1-5 for ImageNet-C, the 25/50/100 % intensities for Robust-R1."""
        if self.family == IMAGENET_C:
            return imagenet_c.SEVERITIES
        return tuple(robust_r1.PRESETS.values())


def _build_registry() -> dict[str, Corruption]:
    entries = [
        Corruption(IMAGENET_C, name, group, partial(imagenet_c.apply, name))
        for group, names in imagenet_c.GROUPS.items()
        for name in names
    ] + [
        Corruption(ROBUST_R1, name, group, partial(robust_r1.apply, name))
        for group, names in robust_r1.FAMILIES.items()
        for name in names
    ]
    return {entry.qualified_name: entry for entry in entries}


def _index(
    registry: dict[str, Corruption], key_of: Callable[[Corruption], list[str]]
) -> dict[str, tuple[str, ...]]:
    """Qualified names grouped under each key that ``key_of`` gives a corruption."""
    index: dict[str, list[str]] = {}
    for qualified, entry in registry.items():
        for key in key_of(entry):
            index.setdefault(key, []).append(qualified)
    return {key: tuple(names) for key, names in index.items()}


_REGISTRY: dict[str, Corruption] = _build_registry()
_BY_SHORT_NAME = _index(_REGISTRY, lambda entry: [entry.name])
# Selectors usable wherever several corruptions are asked for (RandomCorruption, dataset builders):
# a family, a family/group (imagenet_c/noise, robust_r1/capture, ...) or imagenet_c/common.
SELECTORS: dict[str, tuple[str, ...]] = {
    **_index(_REGISTRY, lambda entry: [entry.family, f"{entry.family}/{entry.group}"]),
    f"{IMAGENET_C}/common": tuple(f"{IMAGENET_C}/{name}" for name in imagenet_c.COMMON),
}

OFFICIAL_R1_WEIGHTS: dict[str, float] = {
    f"{ROBUST_R1}/{name}": weight for name, weight in robust_r1.OFFICIAL_WEIGHTS.items()
}


@overload
def list_corruptions(family: None = None) -> dict[str, list[str]]: ...
@overload
def list_corruptions(family: str) -> list[str]: ...
def list_corruptions(family: str | None = None) -> dict[str, list[str]] | list[str]:
    """Qualified corruption names by family, or the names of one family.

    Example:
        >>> len(list_corruptions()["imagenet_c"]), list_corruptions("robust_r1")[0]
        (19, 'robust_r1/lens_blur')
    """
    if family is None:
        return {name: list(SELECTORS[name]) for name in FAMILIES}
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; use one of {list(FAMILIES)}")
    return list(SELECTORS[family])


def get_corruption(name: str) -> Corruption:
    """Look up a corruption by qualified name, or by bare name where that is unique.

    Example:
        >>> get_corruption("zoom_blur").qualified_name
        'imagenet_c/zoom_blur'
    """
    key = _normalise_name(name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    candidates = _BY_SHORT_NAME.get(key, [])
    if len(candidates) == 1:
        return _REGISTRY[candidates[0]]
    if candidates:
        raise ValueError(
            f"corruption name {name!r} is ambiguous: it exists in several families; "
            f"use one of {candidates}"
        )
    close = difflib.get_close_matches(key, [*_REGISTRY, *_BY_SHORT_NAME], n=3)
    hint = f"did you mean {close}? " if close else ""
    raise ValueError(
        f"unknown corruption {name!r}; {hint}valid names are {sorted(_REGISTRY)} "
        "(bare names are accepted where unique)"
    )


def _normalise_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"corruption name must be a str; got {type(name).__name__}")
    return name.strip().lower().replace("-", "_")


def resolve_strength(
    corruption: Corruption,
    severity: StrengthSpec | None = None,
    intensity: StrengthSpec | None = None,
) -> Strength:
    """The numeric strength for ``corruption``: an ImageNet-C severity or a Robust-R1 intensity.

    Level strings ("low", "mid", "high", "25%", "50%", "100%") are accepted in either argument.

    Example:
        >>> resolve_strength(get_corruption("lens_blur"), intensity="50%")
        0.45
    """
    if severity is not None and intensity is not None:
        raise ValueError("give severity= or intensity=, not both")
    value = severity if severity is not None else intensity
    if value is None:
        raise ValueError(f"{corruption.qualified_name} needs {_strength_help(corruption)}")
    if isinstance(value, str):
        level = parse_level(value)
        return level.severity if corruption.family == IMAGENET_C else level.intensity
    if corruption.family == IMAGENET_C and intensity is not None:
        raise ValueError(
            f"{corruption.qualified_name} is an ImageNet-C corruption: it takes "
            f"{_strength_help(corruption)}; intensity= is for Robust-R1 operations"
        )
    if corruption.family == ROBUST_R1 and severity is not None:
        raise ValueError(
            f"{corruption.qualified_name} is a Robust-R1 operation: it takes "
            f"{_strength_help(corruption)}; severity= is for ImageNet-C corruptions"
        )
    if corruption.family == IMAGENET_C:
        return check_severity(value)
    return check_intensity(value)


def _strength_help(corruption: Corruption) -> str:
    levels = ", ".join(f"{lv.name!r}/{lv.percent}%" for lv in LEVELS)
    if corruption.family == IMAGENET_C:
        return f"severity=1-5 (an int) or a level ({levels})"
    return f"intensity= in [0, 1] (a float) or a level ({levels})"


def check_severity(value: Any) -> int:
    """Validate an ImageNet-C severity: an integer 1-5 (integral floats such as 3.0 accepted)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"severity must be an integer 1-5 or a level name; got {value!r}")
    if float(value) not in imagenet_c.SEVERITIES:
        raise ValueError(f"severity must be an integer in 1-5; got {value!r}")
    return int(value)


def check_intensity(value: Any) -> float:
    """Validate a Robust-R1 intensity: a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"intensity must be a number in [0, 1] or a level name; got {value!r}")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        presets = "/".join(str(i) for i in robust_r1.PRESETS.values())
        raise ValueError(
            f"intensity must be in [0, 1]; got {value!r} (the 25/50/100 % presets are {presets})"
        )
    return float(value)


def corrupt(
    image: ImageT,
    name: str,
    severity: StrengthSpec | None = None,
    intensity: StrengthSpec | None = None,
    seed: SeedLike = None,
) -> ImageT:
    """Corrupt ``image`` with corruption ``name``; returns the same type, mode, dtype and shape.

    Args:
        image: a PIL image (any mode), a numpy array (H, W[, C]) or a torch tensor ([C,] H, W);
            see :mod:`robust_u1.corruptions.image_io` for the conversion rules.
        name: e.g. ``"imagenet_c/zoom_blur"``, ``"robust_r1/gaussian_noise"`` or ``"zoom_blur"``.
        severity: ImageNet-C severity 1-5, or a level ("low", "mid", "high", "25%", ...).
        intensity: Robust-R1 intensity in [0, 1], or a level.
        seed: an int or ``numpy.random.Generator``; the same seed gives identical bytes in any
            process. ``None`` uses fresh entropy.

    Example:
        >>> from PIL import Image
        >>> corrupt(Image.new("RGB", (64, 48)), "zoom_blur", severity=3, seed=0).size
        (64, 48)
        >>> corrupt(np.zeros((48, 64), np.uint8), "robust_r1/gaussian_noise", intensity="50%", seed=0).shape
        (48, 64)
    """
    corruption = get_corruption(name)
    strength = resolve_strength(corruption, severity, intensity)
    rng = as_generator(seed)
    rgb, restore = to_rgb(image)
    return restore(_apply_at_min_size(corruption, rgb, strength, rng))


def _apply_at_min_size(
    corruption: Corruption, rgb: np.ndarray, strength: Strength, rng: np.random.Generator
) -> np.ndarray:
    height, width = rgb.shape[:2]
    pad_y, pad_x = max(0, MIN_SIDE - height), max(0, MIN_SIDE - width)
    top, left = pad_y // 2, pad_x // 2
    padded = np.pad(rgb, ((top, pad_y - top), (left, pad_x - left), (0, 0)), mode="reflect")
    corrupted = corruption.function(padded, strength, rng)
    return np.ascontiguousarray(corrupted[top : top + height, left : left + width])


@dataclass(frozen=True)
class CorruptionRecord:
    """What a random draw applied: replay it with ``record.apply(image)``."""

    name: str
    strength: Strength
    seed: int

    @property
    def family(self) -> str:
        return get_corruption(self.name).family

    @property
    def severity(self) -> int | None:
        return int(self.strength) if self.family == IMAGENET_C else None

    @property
    def intensity(self) -> float | None:
        return float(self.strength) if self.family == ROBUST_R1 else None

    def apply(self, image: ImageT) -> ImageT:
        """Apply exactly this corruption again.

        Example:
            >>> record = CorruptionRecord("imagenet_c/contrast", 2, seed=1)
            >>> record.apply(np.zeros((4, 4), np.uint8)).shape
            (4, 4)
        """
        return corrupt(
            image, self.name, severity=self.severity, intensity=self.intensity, seed=self.seed
        )


def expand_names(names: str | Sequence[str] | None) -> tuple[str, ...]:
    """Qualified names for a corruption name, a family, a ``family/group`` selector, or a list.

    Example:
        >>> expand_names(["robust_r1/post", "zoom_blur"])
        ('robust_r1/sharpness_change', 'robust_r1/graffiti', 'robust_r1/watermark_damage', 'imagenet_c/zoom_blur')
    """
    if names is None:
        return tuple(_REGISTRY)
    if isinstance(names, str):
        names = [names]
    expanded: dict[str, None] = {}
    for name in names:
        selected = SELECTORS.get(_normalise_name(name)) or (get_corruption(name).qualified_name,)
        expanded.update(dict.fromkeys(selected))
    if not expanded:
        raise ValueError("names is empty; give at least one corruption, family or selector")
    return tuple(expanded)


def _check_strength_spec(value: Any) -> StrengthSpec:
    if isinstance(value, str):
        parse_level(value)
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return check_severity(value)
    return check_intensity(value)


def strengths_for(corruption: Corruption, specs: Sequence[StrengthSpec]) -> tuple[Strength, ...]:
    """The strengths in ``specs`` that apply to ``corruption``: ints are ImageNet-C severities,
    floats are Robust-R1 intensities, level strings apply to both."""
    applicable = []
    for spec in specs:
        is_severity = isinstance(spec, (int, np.integer))
        if isinstance(spec, str):
            applicable.append(resolve_strength(corruption, severity=spec))
        elif is_severity and corruption.family == IMAGENET_C:
            applicable.append(int(spec))
        elif not is_severity and corruption.family == ROBUST_R1:
            applicable.append(float(spec))
    return tuple(dict.fromkeys(applicable))


class RandomCorruption:
    """Draw a corruption and a strength per image, apply it, and record what was applied.

    Args:
        names: corruption names, families (``"imagenet_c"``, ``"robust_r1"``) or selectors such as
            ``"imagenet_c/common"``, ``"imagenet_c/blur"``, ``"robust_r1/capture"``; default all.
        severities: strengths to draw from: ints (ImageNet-C severities), floats (Robust-R1
            intensities) and level names (both). Default: 1-5 and 0.23/0.45/0.9.
        seed: an int or ``numpy.random.Generator`` driving every draw.
        weights: relative probability of each name, as a sequence parallel to the expanded
            names or a mapping from name to weight (e.g. :data:`OFFICIAL_R1_WEIGHTS`; names it
            leaves out get weight 0); default uniform.

    Works as a torchvision-style transform (``__call__`` returns the corrupted image and keeps
    the draw in ``last_record``) and directly via :meth:`apply` (returns image and record).

    Example:
        >>> transform = RandomCorruption("robust_r1", severities=["25%", "100%"], seed=0)
        >>> out = transform(np.zeros((40, 40, 3), np.uint8))
        >>> transform.last_record.intensity in (0.23, 0.9)
        True
    """

    def __init__(
        self,
        names: str | Sequence[str] | None = None,
        severities: Sequence[StrengthSpec] | None = None,
        seed: SeedLike = None,
        weights: Sequence[float] | Mapping[str, float] | None = None,
    ) -> None:
        self.names = expand_names(names)
        specs = None if severities is None else [_check_strength_spec(s) for s in severities]
        self.strengths: dict[str, tuple[Strength, ...]] = {}
        for qualified in self.names:
            corruption = _REGISTRY[qualified]
            options = (
                corruption.default_strengths if specs is None else strengths_for(corruption, specs)
            )
            if not options:
                raise ValueError(
                    f"none of severities={list(severities or [])} applies to {qualified}, "
                    f"which takes {_strength_help(corruption)}"
                )
            self.strengths[qualified] = options
        self.probabilities = _normalise_weights(self.names, weights)
        self._rng = as_generator(seed)
        self.last_record: CorruptionRecord | None = None

    def draw(self, rng: SeedLike = None) -> CorruptionRecord:
        """Draw a corruption, strength and seed (from ``rng`` if given, else the own generator)."""
        rng = self._rng if rng is None else as_generator(rng)
        name = self.names[rng.choice(len(self.names), p=self.probabilities)]
        options = self.strengths[name]
        return CorruptionRecord(name, options[rng.integers(len(options))], draw_seed(rng))

    def apply(self, image: ImageT) -> tuple[ImageT, CorruptionRecord]:
        """Corrupt ``image`` with a fresh draw; returns ``(corrupted, record)``."""
        record = self.draw()
        return record.apply(image), record

    def __call__(self, image: ImageT) -> ImageT:
        corrupted, self.last_record = self.apply(image)
        return corrupted

    def __repr__(self) -> str:
        return f"{type(self).__name__}(names={list(self.names)}, strengths={self.strengths})"


def _normalise_weights(
    names: tuple[str, ...], weights: Sequence[float] | Mapping[str, float] | None
) -> np.ndarray:
    if weights is None:
        return np.full(len(names), 1.0 / len(names))
    if isinstance(weights, Mapping):
        by_name = {get_corruption(key).qualified_name: value for key, value in weights.items()}
        unknown = sorted(set(by_name) - set(names))
        if unknown:
            raise ValueError(f"weights name corruptions that are not drawn: {unknown}")
        weights = [by_name.get(name, 0.0) for name in names]
    values = np.asarray(weights, dtype=np.float64)
    if values.shape != (len(names),):
        raise ValueError(f"expected {len(names)} weights (one per name); got {len(weights)}")
    if (values < 0).any() or not np.isfinite(values).all() or values.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero; got {weights}")
    return values / values.sum()


def degrade_at_level(
    image: ImageT, percent: int, seed: SeedLike, chooser: RandomCorruption | None = None
) -> tuple[ImageT, CorruptionRecord | None]:
    """The benchmark degradation of the paper's MMMB / MMStar / RealWorldQA protocol.

    One Robust-R1 operation drawn from ``seed`` (the official family weights unless ``chooser``
    says otherwise), applied at the intensity of ``percent`` (25 → 0.23, 50 → 0.45, 100 → 0.9);
    percent 0 returns the image untouched and no record.

    Example:
        >>> degraded, record = degrade_at_level(np.zeros((40, 40, 3), np.uint8), 50, seed=7)
        >>> record.intensity
        0.45
    """
    from dataclasses import replace

    from .levels import level_for_percent

    if percent == 0:
        return image, None
    chooser = chooser or RandomCorruption(ROBUST_R1, weights=OFFICIAL_R1_WEIGHTS)
    record = replace(chooser.draw(as_generator(seed)), strength=level_for_percent(percent).intensity)
    return record.apply(image), record
