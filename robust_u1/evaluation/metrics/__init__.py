"""`evaluate` metric modules shipped with the package; load them with ``evaluate.load(metric_path(name))``."""

from pathlib import Path

METRIC_NAMES: tuple[str, ...] = ("psnr", "ssim", "lpips")


def metric_path(name: str) -> str:
    """The folder of a shipped `evaluate` metric module, for ``evaluate.load``.

    Example:
        >>> import evaluate
        >>> psnr = evaluate.load(metric_path("psnr"))  # doctest: +SKIP
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; shipped metrics are {METRIC_NAMES}.")
    return str(Path(__file__).parent / name)
