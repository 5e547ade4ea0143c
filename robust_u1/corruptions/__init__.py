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
for the corruptions themselves. Names are imported lazily, so the ``corrupt`` command's parser
(`robust_u1.corruptions.cli`) loads without numpy or scipy.
"""

from .._lazy import lazy_attributes

_LAZY_ATTRIBUTES: dict[str, str] = {
    "LEVELS": ".levels",
    "Level": ".levels",
    "level_for_percent": ".levels",
    "parse_level": ".levels",
    "FAMILIES": ".registry",
    "IMAGENET_C": ".registry",
    "MIN_SIDE": ".registry",
    "OFFICIAL_R1_WEIGHTS": ".registry",
    "ROBUST_R1": ".registry",
    "SELECTORS": ".registry",
    "Corruption": ".registry",
    "CorruptionRecord": ".registry",
    "RandomCorruption": ".registry",
    "corrupt": ".registry",
    "degrade_at_level": ".registry",
    "expand_names": ".registry",
    "get_corruption": ".registry",
    "list_corruptions": ".registry",
    "resolve_strength": ".registry",
    "PRESETS": ".robust_r1",
    "SeedLike": ".seeding",
    "as_generator": ".seeding",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES)

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
