"""Recovery metrics: PSNR / SSIM against hand values, LPIPS offline behaviour, the shipped `evaluate` modules."""

import math

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import learned_perceptual_image_patch_similarity

from robust_u1.evaluation.metrics import metric_path
from robust_u1.evaluation.recovery import (
    LPIPSWeightsNotFoundError,
    evaluate_recovery,
    lpips_weights_path,
    recovery_metrics,
    recovery_scores,
)


def gray(value, size=(32, 32)):
    return Image.new("RGB", size, (value,) * 3)


def random_image(seed, size=64):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_psnr_matches_the_known_mse():
    # Every pixel is off by 25/255, so MSE = (25/255)² and PSNR = 20·log10(255/25).
    scores = recovery_scores([gray(153)], [gray(128)], metrics=("psnr",))
    assert scores["psnr"][0] == pytest.approx(20 * math.log10(255 / 25), abs=1e-4)
    # The set score is the mean of per-image PSNRs, not the PSNR of the pooled MSE.
    mean = recovery_metrics([gray(153), gray(138)], [gray(128), gray(128)], metrics=("psnr",))["psnr"]
    assert mean == pytest.approx((20 * math.log10(255 / 25) + 20 * math.log10(255 / 10)) / 2, abs=1e-4)


def test_ssim_matches_hand_values():
    # For flat images SSIM reduces to the luminance term (2·μx·μy + C1) / (μx² + μy² + C1), C1 = 0.01².
    mu_x, mu_y, c1 = 128 / 255, 153 / 255, 0.01**2
    expected = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    assert recovery_scores([gray(153)], [gray(128)], metrics=("ssim",))["ssim"][0] == pytest.approx(expected, abs=1e-5)
    assert recovery_scores([random_image(0)], [random_image(0)], metrics=("ssim",))["ssim"][0] == pytest.approx(1.0)


def test_ssim_agrees_with_scikit_image():
    clean = random_image(1)
    noisy = Image.fromarray(
        np.clip(np.asarray(clean) + np.random.default_rng(2).normal(0, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
    )
    ours = recovery_scores([noisy], [clean], metrics=("ssim",))["ssim"][0]
    reference = structural_similarity(
        np.asarray(clean) / 255.0,
        np.asarray(noisy) / 255.0,
        channel_axis=-1,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert ours == pytest.approx(reference, abs=1e-4)


def test_recovered_images_are_resized_to_the_reference():
    scores = recovery_scores([gray(153, size=(48, 48))], [gray(128, size=(32, 32))], metrics=("psnr", "ssim"))
    assert scores["psnr"][0] == pytest.approx(20 * math.log10(255 / 25), abs=1e-3)
    with pytest.raises(ValueError, match="2 recovered images for 1 references"):
        recovery_scores([gray(1), gray(2)], [gray(1)], metrics=("psnr",))
    with pytest.raises(ValueError, match="Unknown recovery metrics"):
        recovery_scores([gray(1)], [gray(1)], metrics=("fid",))


def test_lpips_without_cached_weights_fails_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected_file = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert lpips_weights_path("alex") == expected_file
    with pytest.raises(LPIPSWeightsNotFoundError) as error:
        recovery_metrics([gray(1)], [gray(2)])
    message = str(error.value)
    assert "alexnet-owt-7be5be79.pth" in message and str(expected_file.parent) in message
    assert "TORCH_HOME" in message and "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in message
    # The check runs before any (expensive) recovery.
    calls = []
    with pytest.raises(LPIPSWeightsNotFoundError):
        evaluate_recovery(lambda images: calls.append(images) or images, [gray(1)], [gray(2)], progress=False)
    assert calls == []


@pytest.fixture
def fake_squeezenet_cache(tmp_path, monkeypatch):
    """Random SqueezeNet 1.1 weights (the architecture torchvision expects) where torch hub looks for them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = lpips_weights_path("squeeze")
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    return path


def test_lpips_runs_offline_from_the_hub_cache(fake_squeezenet_cache):
    clean, other = random_image(3), random_image(4)
    scores = recovery_scores([clean, other], [clean, clean], metrics=("lpips",), lpips_net="squeeze")
    assert scores["lpips"][0] == pytest.approx(0.0, abs=1e-6)
    assert scores["lpips"][1] > 0.0
    to_tensor = lambda image: torch.from_numpy(np.asarray(image) / 255.0).permute(2, 0, 1)[None].float()  # noqa: E731
    direct = learned_perceptual_image_patch_similarity(
        to_tensor(other), to_tensor(clean), net_type="squeeze", normalize=True
    )
    assert scores["lpips"][1] == pytest.approx(direct.item(), rel=1e-5)


def test_evaluate_recovery_runs_the_recoverer_in_batches():
    clean = [gray(128), gray(100), gray(60)]
    corrupted = [gray(0), gray(0), gray(0)]
    batches = []

    def recover_fn(images):
        batches.append(len(images))
        return [gray(153), gray(125), gray(85)][sum(batches) - len(images) : sum(batches)]

    metrics = evaluate_recovery(recover_fn, corrupted, clean, batch_size=2, metrics=("psnr", "ssim"), progress=False)
    assert batches == [2, 1]
    assert metrics["psnr"] == pytest.approx(20 * math.log10(255 / 25), abs=1e-4)
    assert 0.9 < metrics["ssim"] < 1.0


@pytest.fixture(scope="module")
def evaluate_module():
    return pytest.importorskip("evaluate")


def test_shipped_evaluate_metrics_load_offline(evaluate_module, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    psnr = evaluate_module.load(metric_path("psnr"))
    assert psnr.compute(predictions=[gray(153)], references=[gray(128)])["psnr"] == pytest.approx(
        20 * math.log10(255 / 25), abs=1e-4
    )
    ssim = evaluate_module.load(metric_path("ssim"))
    assert ssim.compute(predictions=[random_image(5), gray(9)], references=[random_image(5), gray(9)])[
        "ssim"
    ] == pytest.approx(1.0)
    lpips = evaluate_module.load(metric_path("lpips"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(LPIPSWeightsNotFoundError):
        lpips.compute(predictions=[gray(1)], references=[gray(2)])
    with pytest.raises(ValueError, match="Unknown metric"):
        metric_path("fid")


def test_shipped_lpips_module_computes_with_cached_weights(evaluate_module, fake_squeezenet_cache):
    lpips = evaluate_module.load(metric_path("lpips"))
    image = random_image(6)
    assert lpips.compute(predictions=[image], references=[image], net_type="squeeze")["lpips"] == pytest.approx(
        0.0, abs=1e-6
    )
