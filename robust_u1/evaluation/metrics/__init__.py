"""`evaluate` metric modules shipped with the package; load them with ``evaluate.load(metric_path(name))``."""

from pathlib import Path

import datasets
import evaluate

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


class RecoveryMetric(evaluate.Metric):
    """Base of the shipped metric modules: one image-quality metric of `recovery_metrics`.

    Each module only names its metric and describes it; the comparison itself lives in
    `robust_u1.evaluation.recovery` so the harness and `evaluate.load` give the same numbers.
    Modules import this package, not the class, because `evaluate.load` takes the first
    `evaluate.Metric` subclass it finds in a module's namespace.
    """

    metric: str = ""  # one of recovery.RECOVERY_METRICS
    description: str = ""
    citation: str = ""
    inputs_description: str = ""

    def _info(self):
        return evaluate.MetricInfo(
            description=self.description,
            citation=self.citation,
            inputs_description=self.inputs_description,
            features=datasets.Features({"predictions": datasets.Image(), "references": datasets.Image()}),
        )

    def _compute(self, predictions, references, **options):
        from ..recovery import recovery_metrics

        return recovery_metrics(predictions, references, metrics=(self.metric,), **options)
