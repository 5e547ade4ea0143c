"""Rewards with random-weight CLIP models (no downloads) and SSIM on synthetic images."""

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_msssim import ssim

from robust_u1.rewards import (
    OFFICIAL_REWARD_WEIGHTS,
    CLIPSimilarityReward,
    RewardFunctionError,
    SSIMReward,
    compute_rewards,
    official_rewards,
)


def _smooth_image(height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    """Low-frequency RGB image in [0, 1], so resizing it keeps its structure."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=generator)
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _noisy(image: torch.Tensor, level: float, seed: int = 1) -> torch.Tensor:
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))
    return (image + level * noise).clamp(0, 1)


def _as_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def clip_reward() -> CLIPSimilarityReward:
    return CLIPSimilarityReward(model_name="ViT-S-32", pretrained=None, device="cpu", batch_size=3).load()


@pytest.fixture(scope="module")
def tiny_transformers_clip(tmp_path_factory) -> str:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    folder = tmp_path_factory.mktemp("tiny_clip")
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


# ----------------------------------------------------------------------------------------------------- SSIM


def test_ssim_of_identical_images_is_one_and_drops_with_noise():
    reward = SSIMReward(device="cpu")
    clean = _smooth_image()
    levels = [0.02, 0.1, 0.3]
    scores = reward(images=[clean] + [_noisy(clean, level) for level in levels], target_image=[clean] * 4)

    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert 1.0 > scores[1] > scores[2] > scores[3]


def test_ssim_accepts_pil_numpy_and_tensor_batches_alike():
    reward = SSIMReward(device="cpu")
    clean, output = _smooth_image(), _noisy(_smooth_image(), 0.1)
    # quantise once so every representation holds the same pixels
    clean, output = (torch.from_numpy(_as_uint8_hwc(x)).permute(2, 0, 1).float() / 255 for x in (clean, output))

    as_tensor_list = reward(images=[output], target_image=[clean])
    as_bchw = reward(images=output[None], target_image=clean[None])
    as_numpy = reward(images=[_as_uint8_hwc(output)], target_image=[_as_uint8_hwc(clean)])
    as_pil = reward(
        images=[Image.fromarray(_as_uint8_hwc(output))], target_image=[Image.fromarray(_as_uint8_hwc(clean))]
    )

    expected = ssim(output[None], clean[None], data_range=1.0, win_size=11).item()
    for scores in (as_tensor_list, as_bchw, as_numpy, as_pil):
        assert scores == [pytest.approx(expected, abs=1e-6)]


def test_ssim_resizes_the_reference_bilinearly_to_the_output_size():
    reward = SSIMReward(device="cpu")
    large_clean = _smooth_image(128, 96)
    output = F.interpolate(large_clean[None], size=(64, 48), mode="bilinear", align_corners=False)[0]

    same_scene, other_scene = reward(images=[output, output], target_image=[large_clean, _smooth_image(128, 96, 5)])
    assert same_scene == pytest.approx(1.0, abs=1e-6)  # the bilinear resize of the reference is exactly the output
    assert other_scene < 0.9


def test_ssim_reference_path_and_grayscale(tmp_path):
    reward = SSIMReward(device="cpu")
    gray = Image.fromarray(_as_uint8_hwc(_smooth_image())[..., 0])
    gray.save(tmp_path / "clean.png")
    as_rgb = np.repeat(np.asarray(gray)[..., None], 3, axis=2)
    assert reward(images=[as_rgb], target_image=[str(tmp_path / "clean.png")]) == [pytest.approx(1.0, abs=1e-6)]


def test_ssim_rejects_images_smaller_than_the_window():
    reward = SSIMReward(device="cpu")
    tiny = torch.rand(3, 8, 40)
    with pytest.raises(ValueError, match="smaller than the 11-px SSIM window"):
        reward(images=[tiny], target_image=[tiny])
    assert SSIMReward(device="cpu", win_size=7)(images=[tiny], target_image=[tiny]) == [pytest.approx(1.0)]


def test_ssim_none_image_gives_none():
    reward = SSIMReward(device="cpu")
    clean = _smooth_image()
    assert reward(images=[None, clean], target_image=[clean, clean]) == [None, pytest.approx(1.0, abs=1e-6)]


# ----------------------------------------------------------------------------------------------------- CLIP


def test_clip_reward_is_one_for_identical_images_and_below_for_different(clip_reward):
    first, second = _smooth_image(seed=0), _smooth_image(seed=3)
    same, different = clip_reward(images=[first, first], target_image=[first, second])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert different < 1.0


def test_clip_reward_applies_alpha_to_the_clamped_cosine(clip_reward):
    first, second = _smooth_image(seed=0), _smooth_image(seed=3)
    embeddings = clip_reward.encode([first, second])
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(2))
    cosine = float((embeddings[0] @ embeddings[1]).clamp(0, 1))

    sharper = CLIPSimilarityReward(alpha=2.0, model=clip_reward.model, processor=clip_reward.processor, device="cpu")
    default_score = clip_reward(images=[first], target_image=[second])[0]
    assert default_score == pytest.approx(math.exp(-5.0 * (1 - cosine)), rel=1e-5)
    assert sharper(images=[first], target_image=[second])[0] == pytest.approx(math.exp(-2.0 * (1 - cosine)), rel=1e-5)


def test_clip_reward_batches_consistently_and_skips_none(clip_reward):
    images = [_smooth_image(seed=seed) for seed in range(5)]
    targets = [_noisy(image, 0.2) for image in images]
    batched = clip_reward(images=images, target_image=targets)  # batch_size 3: two chunks of 10 encodings
    one_by_one = [clip_reward(images=[image], target_image=[target])[0] for image, target in zip(images, targets)]
    assert batched == pytest.approx(one_by_one, rel=1e-4)

    with_gap = clip_reward(images=[images[0], None], target_image=[targets[0], targets[1]])
    assert with_gap == [pytest.approx(batched[0], rel=1e-4), None]


def test_clip_reward_same_for_pil_numpy_and_tensor(clip_reward):
    uint8 = _as_uint8_hwc(_smooth_image())
    tensor = torch.from_numpy(uint8).permute(2, 0, 1).float() / 255
    scores = clip_reward(images=[Image.fromarray(uint8), uint8], target_image=[tensor, tensor])
    assert scores == [pytest.approx(1.0, abs=1e-5)] * 2


def test_clip_reward_loads_lazily_and_from_a_local_weights_file(tmp_path, clip_reward):
    from safetensors.torch import save_file

    weights = tmp_path / "vit_s_32.safetensors"
    save_file(clip_reward.model.state_dict(), str(weights))
    from_file = CLIPSimilarityReward(model_name="ViT-S-32", pretrained=str(weights), device="cpu")
    assert from_file.model is None

    image = _smooth_image()
    torch.testing.assert_close(from_file.encode([image]), clip_reward.encode([image]))


def test_clip_reward_from_transformers_folder(tiny_transformers_clip):
    from transformers import CLIPImageProcessor, CLIPModel

    reward = CLIPSimilarityReward.from_transformers(tiny_transformers_clip, device="cpu")
    first, second = _smooth_image(seed=0), _smooth_image(seed=3)
    same, different = reward(images=[first, first], target_image=[first, second])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert different < 1.0

    model = CLIPModel.from_pretrained(tiny_transformers_clip)
    processor = CLIPImageProcessor.from_pretrained(tiny_transformers_clip)
    pixels = processor(images=[Image.fromarray(_as_uint8_hwc(first))], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    torch.testing.assert_close(reward.encode([first]), expected)


def test_clip_reward_needs_model_and_processor_together(clip_reward):
    with pytest.raises(ValueError, match="together"):
        CLIPSimilarityReward(model=clip_reward.model)


# --------------------------------------------------------------------------------------------- compute_rewards


def test_compute_rewards_weights_and_nan_for_none(caplog):
    def always_one(images, **kwargs):
        return [1.0] * len(images)

    def half_scored(images, **kwargs):
        return [0.5, None, None]

    def mostly_unscored(images, **kwargs):
        return [2.0, 3.0, None]

    with caplog.at_level(logging.WARNING, logger="robust_u1.rewards"):
        per_func, weighted = compute_rewards(
            [half_scored, mostly_unscored], [1.0, 0.2], images=[0, 1, 2], prompts=["p"] * 3
        )
    expected_per_func = torch.tensor([[0.5, 2.0], [math.nan, 3.0], [math.nan, math.nan]])
    torch.testing.assert_close(per_func, expected_per_func, equal_nan=True)
    torch.testing.assert_close(weighted, torch.tensor([0.5 + 0.4, 0.6, math.nan]), equal_nan=True)
    assert "half_scored" in caplog.text and "2 of 3" in caplog.text

    _, unweighted = compute_rewards([always_one, always_one], images=[0, 1, 2])
    assert torch.equal(unweighted, torch.full((3,), 2.0))


def test_compute_rewards_passes_every_column_as_keywords():
    seen = {}

    def recorder(images, prompts, target_image, **kwargs):
        seen.update(kwargs, prompts=prompts, target_image=target_image)
        return [0.0] * len(images)

    compute_rewards([recorder], images=["a", "b"], prompts=["p", "q"], target_image=["x", "y"], image=["i", "j"])
    assert seen == {"prompts": ["p", "q"], "target_image": ["x", "y"], "image": ["i", "j"]}


def test_compute_rewards_names_a_raising_reward():
    def broken_reward(images, **kwargs):
        raise ZeroDivisionError("boom")

    with pytest.raises(RewardFunctionError, match="'broken_reward'.*ZeroDivisionError: boom") as info:
        compute_rewards([broken_reward], images=[0])
    assert info.value.reward_name == "broken_reward"
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_compute_rewards_rejects_wrong_length_and_weights():
    def short_reward(images, **kwargs):
        return [1.0]

    with pytest.raises(RewardFunctionError, match="'short_reward'.*returned 1 rewards for a batch of 2"):
        compute_rewards([short_reward], images=[0, 1])
    with pytest.raises(ValueError, match="1 reward functions but 2 weights"):
        compute_rewards([short_reward], [1.0, 2.0], images=[0])


def test_compute_rewards_reports_the_missing_reference_column():
    with pytest.raises(RewardFunctionError, match="'restoration'.*target_image"):
        compute_rewards([SSIMReward(device="cpu")], images=[_smooth_image()], prompts=["p"])


def test_official_rewards_are_lazy_and_weighted_as_released():
    reward_funcs, reward_weights = official_rewards(device="cpu")
    assert [func.name for func in reward_funcs] == ["restoration", "clip"]
    assert [func.__name__ for func in reward_funcs] == ["restoration", "clip"]
    assert reward_weights == [OFFICIAL_REWARD_WEIGHTS["restoration"], OFFICIAL_REWARD_WEIGHTS["clip"]] == [1.0, 0.2]
    clip = reward_funcs[1]
    assert (clip.model_name, clip.pretrained, clip.alpha, clip.model) == ("ViT-B-32", "openai", 5.0, None)


def test_ssim_and_clip_together_through_compute_rewards(clip_reward):
    clean = _smooth_image()
    images = [clean, _noisy(clean, 0.3), None]
    per_func, weighted = compute_rewards(
        [SSIMReward(device="cpu"), clip_reward], [1.0, 0.2], images=images, target_image=[clean] * 3
    )
    assert per_func[0].tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert weighted[0].item() == pytest.approx(1.2, abs=1e-5)
    assert weighted[1].item() < weighted[0].item()
    assert torch.isnan(weighted[2])


# ------------------------------------------------------------------------------------ the input rule


def test_rewards_refuse_float_images_in_0_255_instead_of_clamping(clip_reward):
    # Before: clamped to [0, 1], a 0..255 float image scored SSIM 0.15 against itself in 0..1.
    clean = _smooth_image()
    message = r"float image values must be in \[0, 1\]; got values in \[.*\] \(for 0-255 data divide by 255"
    with pytest.raises(ValueError, match=message):
        SSIMReward(device="cpu")(images=[clean * 255], target_image=[clean])
    with pytest.raises(ValueError, match=message):
        clip_reward(images=[clean * 255], target_image=[clean])
    with pytest.raises(RewardFunctionError, match=r"reward function 'restoration': raised ValueError: float image"):
        compute_rewards([SSIMReward(device="cpu")], images=[clean.permute(1, 2, 0).numpy() * 255], target_image=[clean])
    # the fix the message names gives the right score
    assert SSIMReward(device="cpu")(images=[clean * 255 / 255], target_image=[clean]) == [pytest.approx(1.0, abs=1e-9)]


def test_rewards_refuse_nan_images(clip_reward):
    clean = _smooth_image()
    broken = clean.clone()
    broken[0, 0, 0] = float("nan")
    for reward in (SSIMReward(device="cpu"), clip_reward):
        with pytest.raises(ValueError, match=r"1 non-finite values \(NaN\)"):
            reward(images=[broken], target_image=[clean])


def test_rewards_read_hwc_and_half_precision_tensors():
    clean = _smooth_image()
    reward = SSIMReward(device="cpu")
    assert reward(images=[clean.permute(1, 2, 0).contiguous()], target_image=[clean]) == [pytest.approx(1.0, abs=1e-9)]
    half = reward(images=[clean.to(torch.bfloat16)], target_image=[clean])[0]
    assert 0.95 < half < 1.0
