"""SSIM for image recovery, as an `evaluate` metric module.

Load it offline from its folder::

    import evaluate
    from robust_u1.evaluation import metric_path

    ssim = evaluate.load(metric_path("ssim"))
    ssim.compute(predictions=recovered_images, references=clean_images)
"""

import datasets
import evaluate

from robust_u1.evaluation.recovery import recovery_metrics

_DESCRIPTION = "Structural similarity (Gaussian window 11, sigma 1.5; higher is better) between recovered and clean RGB images in [0, 1], averaged over images."

_KWARGS_DESCRIPTION = """
Args:
    predictions: recovered images (PIL images; resized to the reference size when they differ).
    references: clean images.
Returns:
    ssim: the mean over image pairs.
Examples:
    >>> ssim = evaluate.load(metric_path("ssim"))
    >>> ssim.compute(predictions=[image], references=[image])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SSIM(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Image(), "references": datasets.Image()}),
        )

    def _compute(self, predictions, references):
        return recovery_metrics(predictions, references, metrics=("ssim",))
