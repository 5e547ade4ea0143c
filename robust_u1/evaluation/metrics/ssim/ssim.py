"""SSIM for image recovery, as an `evaluate` metric module.

The library's one SSIM definition (`robust_u1.image_metrics.structural_similarity`, also the stage II
reward): Gaussian window σ = 1.5, 11 × 11 taps, K1 = 0.01, K2 = 0.03, data range 1, mean over the valid
region (no padded border) and over the RGB channels — scikit-image's ``structural_similarity(
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`` and pytorch-msssim's
``ssim``. Images under 11 px on a side are refused.

Load it offline from its folder::

    import evaluate
    from robust_u1.evaluation import metric_path

    ssim = evaluate.load(metric_path("ssim"))
    ssim.compute(predictions=recovered_images, references=clean_images)
"""

import evaluate

from robust_u1.evaluation import metrics

_DESCRIPTION = (
    "Structural similarity (higher is better) between recovered and clean RGB images in [0, 1], averaged over "
    "images: Gaussian window sigma 1.5 with 11 x 11 taps, mean over the valid region (no padded border), as "
    "scikit-image (gaussian_weights=True, use_sample_covariance=False, data_range=1) and pytorch-msssim compute "
    "it; the same function as the stage II SSIM reward. Images must be at least 11 px on a side."
)

_CITATION = """\
@article{wang2004ssim,
  title={Image quality assessment: from error visibility to structural similarity},
  author={Wang, Zhou and Bovik, Alan C. and Sheikh, Hamid R. and Simoncelli, Eero P.},
  journal={IEEE Transactions on Image Processing},
  volume={13}, number={4}, pages={600--612}, year={2004}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: recovered images (PIL images; resized to the reference size when they differ).
    references: clean images.
Returns:
    ssim: the mean over image pairs.
Examples:
    >>> import evaluate
    >>> from PIL import Image
    >>> from robust_u1.evaluation.metrics import metric_path
    >>> ssim = evaluate.load(metric_path("ssim"))
    >>> image = Image.new("RGB", (16, 16), (90, 30, 200))
    >>> round(ssim.compute(predictions=[image], references=[image])["ssim"], 4)
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SSIM(metrics.RecoveryMetric):
    metric = "ssim"
    description = _DESCRIPTION
    citation = _CITATION
    inputs_description = _KWARGS_DESCRIPTION
