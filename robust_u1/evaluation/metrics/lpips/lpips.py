"""LPIPS for image recovery, as an `evaluate` metric module.

Load it offline from its folder::

    import evaluate
    from robust_u1.evaluation import metric_path

    lpips = evaluate.load(metric_path("lpips"))
    lpips.compute(predictions=recovered_images, references=clean_images)
"""

import evaluate

from robust_u1.evaluation import metrics

_DESCRIPTION = "Learned perceptual image patch similarity (lower is better) between recovered and clean images, averaged over images. Needs torchvision's ImageNet backbone weights in the torch-hub cache ($TORCH_HOME/hub/checkpoints); they are not downloaded unless allow_download=True."

_CITATION = """\
@inproceedings{zhang2018lpips,
  title={The Unreasonable Effectiveness of Deep Features as a Perceptual Metric},
  author={Zhang, Richard and Isola, Phillip and Efros, Alexei A. and Shechtman, Eli and Wang, Oliver},
  booktitle={CVPR}, year={2018}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: recovered images (PIL images; resized to the reference size when they differ).
    references: clean images.
    net_type: LPIPS backbone, "alex" (default), "vgg" or "squeeze".
    allow_download: let torchvision download missing backbone weights.
Returns:
    lpips: the mean over image pairs.
Examples:
    >>> import evaluate
    >>> from robust_u1.evaluation.metrics import metric_path
    >>> lpips = evaluate.load(metric_path("lpips"))
    >>> lpips.compute(predictions=recovered_images, references=clean_images)  # doctest: +SKIP
    {'lpips': 0.3223}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LPIPS(metrics.RecoveryMetric):
    metric = "lpips"
    description = _DESCRIPTION
    citation = _CITATION
    inputs_description = _KWARGS_DESCRIPTION

    def _compute(self, predictions, references, net_type: str = "alex", allow_download: bool = False):
        return super()._compute(predictions, references, lpips_net=net_type, allow_download=allow_download)
