"""Seeded image corruptions: the 19 ImageNet-C corruptions and the 16 Robust-R1 degradations.

Example:
    >>> from PIL import Image
    >>> from robust_u1.corruptions import RandomCorruption, corrupt, list_corruptions
    >>> image = Image.new("RGB", (64, 64), (120, 80, 40))
    >>> corrupt(image, "imagenet_c/fog", severity=2, seed=0).size
    (64, 64)
    >>> corrupt(image, "robust_r1/gaussian_noise", intensity="50%", seed=0).mode
    'RGB'
    >>> transform = RandomCorruption(names="robust_r1", severities=["low", "high"], seed=0)
    >>> corrupted, record = transform.apply(image)

See :mod:`.image_io` for the image mode / dtype rules, :mod:`.registry` for names and small
images, :mod:`.levels` for the low / mid / high mapping, :mod:`.imagenet_c` and :mod:`.robust_r1`
for the corruptions themselves.
"""

from .levels import LEVELS, Level, level_for_percent, parse_level
from .registry import (
    FAMILIES,
    IMAGENET_C,
    MIN_SIDE,
    OFFICIAL_R1_WEIGHTS,
    ROBUST_R1,
    SELECTORS,
    Corruption,
    CorruptionRecord,
    RandomCorruption,
    corrupt,
    degrade_at_level,
    expand_names,
    get_corruption,
    list_corruptions,
    resolve_strength,
)
from .robust_r1 import PRESETS
from .seeding import SeedLike, as_generator

__all__ = [
    "FAMILIES",
    "IMAGENET_C",
    "LEVELS",
    "MIN_SIDE",
    "OFFICIAL_R1_WEIGHTS",
    "PRESETS",
    "ROBUST_R1",
    "SELECTORS",
    "Corruption",
    "CorruptionRecord",
    "Level",
    "RandomCorruption",
    "SeedLike",
    "as_generator",
    "corrupt",
    "degrade_at_level",
    "expand_names",
    "get_corruption",
    "level_for_percent",
    "list_corruptions",
    "parse_level",
    "resolve_strength",
]
