"""PSNR for image recovery, as an `evaluate` metric module.

Load it offline from its folder::

    import evaluate
    from robust_u1.evaluation import metric_path

    psnr = evaluate.load(metric_path("psnr"))
    psnr.compute(predictions=recovered_images, references=clean_images)
"""

import evaluate

from robust_u1.evaluation import metrics

_DESCRIPTION = "Peak signal-to-noise ratio (dB, higher is better) between recovered and clean RGB images in [0, 1], averaged over images."

_CITATION = ""

_KWARGS_DESCRIPTION = """
Args:
    predictions: recovered images (PIL images; resized to the reference size when they differ).
    references: clean images.
Returns:
    psnr: the mean over image pairs.
Examples:
    >>> import evaluate
    >>> from PIL import Image
    >>> from robust_u1.evaluation.metrics import metric_path
    >>> psnr = evaluate.load(metric_path("psnr"))
    >>> result = psnr.compute(predictions=[Image.new("RGB", (16, 16), (153,) * 3)], references=[Image.new("RGB", (16, 16), (128,) * 3)])
    >>> round(result["psnr"], 2)
    20.17
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PSNR(metrics.RecoveryMetric):
    metric = "psnr"
    description = _DESCRIPTION
    citation = _CITATION
    inputs_description = _KWARGS_DESCRIPTION
