"""One SSIM everywhere: the reward, the evaluation harness and the `evaluate` module agree with
scikit-image (Gaussian σ = 1.5, 11 taps, mean over the valid region) on natural images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from skimage.metrics import structural_similarity as skimage_ssim

from robust_u1.corruptions import corrupt
from robust_u1.evaluation.metrics import metric_path
from robust_u1.evaluation.recovery import recovery_scores
from robust_u1.image_metrics import structural_similarity
from robust_u1.rewards import SSIMReward

# (clean, corrupted) uint8 HWC pairs: natural images × corruptions, cropped to odd sizes down to 11 px.
_NATURAL = {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea(),
            "camera": np.repeat(data.camera()[..., None], 3, axis=-1)}  # fmt: skip
_CORRUPTIONS = [("imagenet_c/gaussian_noise", {"severity": 3}), ("imagenet_c/fog", {"severity": 2}),
                ("imagenet_c/jpeg_compression", {"severity": 4}), ("robust_r1/lens_blur", {"intensity": 0.45})]  # fmt: skip
_SIZES = [(None, None), (131, 97), (37, 53), (11, 11), (11, 40), (23, 12)]


def _pairs():
    for index, (name, image) in enumerate(_NATURAL.items()):
        corruption, strength = _CORRUPTIONS[index % len(_CORRUPTIONS)]
        corrupted = corrupt(image, corruption, seed=index, **strength)
        for height, width in _SIZES:
            top, left = 50 + index, 70 + index  # not aligned to anything
            crop = (slice(top, top + height) if height else slice(None), slice(left, left + width) if width else slice(None))
            yield f"{name}-{corruption.split('/')[1]}-{height}x{width}", image[crop], corrupted[crop]


PAIRS = list(_pairs())


def _reference(clean: np.ndarray, corrupted: np.ndarray) -> float:
    return skimage_ssim(clean / 255.0, corrupted / 255.0, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                        sigma=1.5, use_sample_covariance=False)  # fmt: skip


@pytest.mark.parametrize(("clean", "corrupted"), [pair[1:] for pair in PAIRS], ids=[pair[0] for pair in PAIRS])
def test_reward_and_evaluation_ssim_equal_scikit_image(clean, corrupted):
    reference = _reference(clean, corrupted)
    as_tensor = lambda array: torch.from_numpy(array / 255.0).permute(2, 0, 1)  # noqa: E731
    direct = float(structural_similarity(as_tensor(corrupted), as_tensor(clean)))
    reward = SSIMReward(device="cpu").score(corrupted, clean)
    evaluation = recovery_scores([Image.fromarray(corrupted)], [Image.fromarray(clean)], metrics=("ssim",))["ssim"][0]
    assert abs(direct - reference) <= 1e-4
    assert abs(reward - reference) <= 1e-4
    assert abs(evaluation - reference) <= 1e-4
    assert reward == pytest.approx(evaluation, abs=1e-12)  # one function, not two that happen to agree


def test_the_shipped_evaluate_module_uses_the_same_ssim():
    evaluate = pytest.importorskip("evaluate")
    module = evaluate.load(metric_path("ssim"))
    _, clean, corrupted = PAIRS[0]
    score = module.compute(predictions=[Image.fromarray(corrupted)], references=[Image.fromarray(clean)])["ssim"]
    assert abs(score - _reference(clean, corrupted)) <= 1e-4
    assert "valid region" in module.description and "1.5" in module.description


def test_the_old_padded_border_definition_would_fail_this_test():
    # torchmetrics' default averages over the reflect-padded border: measurably not the standard SSIM.
    from torchmetrics.functional.image import structural_similarity_index_measure

    _, clean, corrupted = PAIRS[0]
    padded = structural_similarity_index_measure(
        torch.from_numpy(corrupted / 255.0).permute(2, 0, 1)[None], torch.from_numpy(clean / 255.0).permute(2, 0, 1)[None],
        data_range=1.0,
    ).item()  # fmt: skip
    assert abs(padded - _reference(clean, corrupted)) > 1e-3


@pytest.mark.parametrize("size", [(10, 40), (40, 10), (5, 5)])
def test_images_smaller_than_the_window_are_a_clear_error(size):
    image = np.zeros((*size, 3), np.uint8)
    pattern = rf"image of {size[0]}x{size[1]} px is smaller than the 11-px SSIM window"
    with pytest.raises(ValueError, match=pattern):
        structural_similarity(torch.zeros(3, *size), torch.zeros(3, *size))
    with pytest.raises(ValueError, match=pattern):
        SSIMReward(device="cpu")(images=[image], target_image=[image])
    with pytest.raises(ValueError, match=pattern):
        recovery_scores([Image.fromarray(image)], [Image.fromarray(image)], metrics=("ssim",))


def test_mismatched_shapes_are_a_clear_error():
    with pytest.raises(ValueError, match=r"SSIM needs images of the same shape; got \(3, 16, 16\) and \(3, 16, 17\)"):
        structural_similarity(torch.zeros(3, 16, 16), torch.zeros(3, 16, 17))
