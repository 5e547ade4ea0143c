"""Registry, levels, errors, seeding and RandomCorruption of robust_u1.corruptions."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
from PIL import Image

from robust_u1.corruptions import (
    OFFICIAL_R1_WEIGHTS,
    CorruptionRecord,
    RandomCorruption,
    corrupt,
    expand_names,
    get_corruption,
    list_corruptions,
    parse_level,
)
from robust_u1.corruptions.robust_r1 import jpeg_quality

ALL_NAMES = [name for family in list_corruptions().values() for name in family]
IMAGENET_C_COMMON = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
]
IMAGENET_C_EXTRA = ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
ROBUST_R1_OPS = [
    "lens_blur",
    "lens_flare",
    "motion_blur",
    "dirty_lens",
    "hsv_saturation",
    "jpeg_compression",
    "block_exchange",
    "mean_shift",
    "scan_lines",
    "dark_illumination",
    "atmospheric_turbulence",
    "gaussian_noise",
    "color_diffusion",
    "sharpness_change",
    "graffiti",
    "watermark_damage",
]


def levels_of(name: str) -> list[dict]:
    if get_corruption(name).family == "imagenet_c":
        return [{"severity": s} for s in range(1, 6)]
    return [{"intensity": i} for i in (0.23, 0.45, 0.9)]


def sample_images() -> dict[str, object]:
    rng = np.random.default_rng(0)
    return {
        "rgb_64": Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
        "odd_33x47_numpy": rng.integers(0, 256, (33, 47, 3), dtype=np.uint8),
        "grey": Image.fromarray(rng.integers(0, 256, (40, 36), dtype=np.uint8), "L"),
        "rgba": Image.fromarray(rng.integers(0, 256, (48, 40, 4), dtype=np.uint8), "RGBA"),
        "one_pixel": Image.new("RGB", (1, 1), (90, 140, 200)),
    }


def test_registry_lists_both_families_in_full():
    families = list_corruptions()
    assert families["imagenet_c"] == [
        f"imagenet_c/{n}" for n in IMAGENET_C_COMMON + IMAGENET_C_EXTRA
    ]
    assert families["robust_r1"] == [f"robust_r1/{n}" for n in ROBUST_R1_OPS]
    assert list_corruptions("robust_r1") == families["robust_r1"]
    with pytest.raises(ValueError, match="unknown family 'imagenet'"):
        list_corruptions("imagenet")


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_corruption_every_level_keeps_size_mode_and_dtype(name):
    for level in levels_of(name):
        for label, image in sample_images().items():
            corrupted = corrupt(image, name, **level, seed=3)
            assert type(corrupted) is type(image), label
            if isinstance(image, np.ndarray):
                assert (corrupted.shape, corrupted.dtype) == (image.shape, image.dtype), label
            else:
                assert (corrupted.size, corrupted.mode) == (image.size, image.mode), label
            if label == "rgba":  # alpha is never corrupted
                assert np.array_equal(np.asarray(corrupted)[..., 3], np.asarray(image)[..., 3])


def test_bare_names_resolve_where_unique_and_ambiguous_ones_list_candidates():
    assert get_corruption("zoom_blur").qualified_name == "imagenet_c/zoom_blur"
    assert get_corruption("Lens-Blur").qualified_name == "robust_r1/lens_blur"
    for shared in ("gaussian_noise", "motion_blur", "jpeg_compression"):
        with pytest.raises(ValueError) as error:
            get_corruption(shared)
        message = str(error.value)
        assert "ambiguous" in message
        assert f"imagenet_c/{shared}" in message and f"robust_r1/{shared}" in message


def test_unknown_name_suggests_and_lists_valid_names():
    with pytest.raises(ValueError) as error:
        corrupt(np.zeros((8, 8, 3), np.uint8), "zoom_blurr", severity=1)
    message = str(error.value)
    assert "unknown corruption 'zoom_blurr'" in message
    assert "did you mean" in message and "'zoom_blur'" in message
    assert all(name in message for name in ALL_NAMES)


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "fragment"),
    [
        ("zoom_blur", {"severity": 6}, ValueError, "severity must be an integer in 1-5; got 6"),
        ("zoom_blur", {"severity": 2.5}, ValueError, "severity must be an integer in 1-5"),
        ("zoom_blur", {"severity": True}, TypeError, "severity must be an integer 1-5"),
        ("zoom_blur", {}, ValueError, "imagenet_c/zoom_blur needs severity=1-5"),
        ("zoom_blur", {"intensity": 0.3}, ValueError, "intensity= is for Robust-R1 operations"),
        ("lens_blur", {"severity": 3}, ValueError, "severity= is for ImageNet-C corruptions"),
        ("lens_blur", {"intensity": 1.5}, ValueError, "intensity must be in [0, 1]; got 1.5"),
        ("lens_blur", {"intensity": float("nan")}, ValueError, "intensity must be in [0, 1]"),
        ("lens_blur", {"intensity": "extreme"}, ValueError, "unknown level 'extreme'"),
        ("lens_blur", {"intensity": 0.2, "severity": 1}, ValueError, "not both"),
        ("lens_blur", {"intensity": 0.2, "seed": -1}, ValueError, "non-negative integer; got -1"),
        ("lens_blur", {"intensity": 0.2, "seed": "7"}, TypeError, "seed must be an int"),
        (3, {"severity": 1}, TypeError, "corruption name must be a str"),
    ],
)
def test_bad_arguments_raise_errors_that_name_the_fix(name, kwargs, error, fragment):
    with pytest.raises(error) as raised:
        corrupt(np.zeros((8, 8, 3), np.uint8), name, **kwargs)
    assert fragment in str(raised.value)


def test_levels_map_to_documented_severities_and_intensities():
    assert [(lv.severity, lv.intensity) for lv in map(parse_level, ("low", "mid", "high"))] == [
        (1, 0.23),
        (3, 0.45),
        (5, 0.9),
    ]
    image = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for level, severity, intensity in (("low", 1, 0.23), ("50%", 3, 0.45), ("HIGH", 5, 0.9)):
        assert np.array_equal(
            corrupt(image, "fog", severity=level, seed=2),
            corrupt(image, "fog", severity=severity, seed=2),
        )
        assert np.array_equal(
            corrupt(image, "graffiti", intensity=level, seed=2),
            corrupt(image, "graffiti", intensity=intensity, seed=2),
        )


def test_same_seed_same_bytes_and_different_seeds_differ():
    image = np.random.default_rng(2).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    for name in (
        "imagenet_c/gaussian_noise",
        "glass_blur",
        "elastic_transform",
        "robust_r1/graffiti",
    ):
        level = levels_of(name)[2]
        first = corrupt(image, name, **level, seed=11)
        assert first.tobytes() == corrupt(image, name, **level, seed=11).tobytes()
        assert (
            first.tobytes()
            == corrupt(image, name, **level, seed=np.random.default_rng(11)).tobytes()
        )
        assert first.tobytes() != corrupt(image, name, **level, seed=12).tobytes()


def test_global_random_state_is_left_untouched():
    np.random.seed(5)
    random.seed(5)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    image = np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for name in ("imagenet_c/gaussian_noise", "fog", "frost", "glass_blur", "robust_r1/dirty_lens"):
        corrupt(image, name, **levels_of(name)[1], seed=0)
    after = np.random.get_state()
    assert numpy_state[0] == after[0] and np.array_equal(numpy_state[1], after[1])
    assert numpy_state[2:] == after[2:]
    assert random.getstate() == python_state


def test_robust_r1_known_formulas():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    # jpeg_compression: quality 100 - 95 i (OpenCV encoder, BGR order)
    assert [jpeg_quality(i) for i in (0.0, 0.23, 0.45, 0.9, 1.0)] == [100, 78, 57, 14, 5]
    _, encoded = cv2.imencode(".jpg", image[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 57])
    expected = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    assert np.array_equal(corrupt(image, "robust_r1/jpeg_compression", intensity=0.45), expected)
    # dark_illumination: times (1 - i²), truncated
    dark = corrupt(image, "dark_illumination", intensity=0.45)
    assert np.array_equal(dark, (image * (1 - 0.45**2)).astype(np.uint8))
    # gaussian_noise: sigma 75 i on the 0-255 scale (mid-grey, so clipping never bites)
    grey = np.full((256, 256, 3), 128, np.uint8)
    noisy = corrupt(grey, "robust_r1/gaussian_noise", intensity=0.23, seed=0).astype(np.float64)
    assert abs((noisy - 128).std() - 75 * 0.23) < 0.02 * 75 * 0.23


def test_mean_shift_is_fast_on_a_1024_image():
    import time

    image = cv2.resize(
        np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8), (1024, 1024)
    )
    start = time.perf_counter()
    corrupt(image, "mean_shift", intensity=0.9, seed=0)
    assert time.perf_counter() - start < 2.0


def test_random_corruption_records_and_replays_its_draws():
    image = np.random.default_rng(6).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    transform = RandomCorruption(
        ["imagenet_c/blur", "robust_r1/post"], severities=["low", 4, 0.7], seed=9
    )
    replay = RandomCorruption(
        ["imagenet_c/blur", "robust_r1/post"], severities=["low", 4, 0.7], seed=9
    )
    drawn = set()
    for _ in range(12):
        corrupted = transform(image)
        record = transform.last_record
        assert isinstance(record, CorruptionRecord)
        assert np.array_equal(corrupted, record.apply(image))
        assert np.array_equal(corrupted, replay(image))
        if record.family == "imagenet_c":
            assert record.severity in (1, 4) and record.intensity is None
        else:
            assert record.intensity in (0.23, 0.7) and record.severity is None
        drawn.add(record.name)
    assert drawn <= set(expand_names(["imagenet_c/blur", "robust_r1/post"]))
    assert len(drawn) > 2


def test_random_corruption_is_a_torchvision_transform():
    import torch
    from torchvision import transforms

    pipeline = transforms.Compose([RandomCorruption("robust_r1", seed=0), transforms.PILToTensor()])
    tensor = pipeline(Image.new("RGB", (40, 30), (20, 120, 220)))
    assert tensor.shape == (3, 30, 40) and tensor.dtype == torch.uint8


def test_random_corruption_follows_weights():
    sampler = RandomCorruption("robust_r1", weights=OFFICIAL_R1_WEIGHTS, seed=0)
    assert sampler.probabilities.sum() == pytest.approx(1.0)
    # official weights: each of the four families totals 1/4
    family_totals = {}
    for name, probability in zip(sampler.names, sampler.probabilities):
        family_totals[get_corruption(name).group] = (
            family_totals.get(get_corruption(name).group, 0) + probability
        )
    assert family_totals == pytest.approx(
        {"capture": 0.25, "transmission": 0.25, "environment": 0.25, "post": 0.25}
    )
    only_graffiti = RandomCorruption("robust_r1/post", weights={"graffiti": 1.0}, seed=0)
    assert {only_graffiti.draw().name for _ in range(20)} == {"robust_r1/graffiti"}


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (
            {"names": "robust_r1", "severities": [3]},
            "none of severities=[3] applies to robust_r1/lens_blur",
        ),
        ({"names": ["zoom_blur"], "severities": [9]}, "severity must be an integer in 1-5"),
        ({"names": ["zoom_blur"], "weights": [1.0, 2.0]}, "expected 1 weights"),
        ({"names": ["zoom_blur", "fog"], "weights": [0, 0]}, "not all zero"),
        ({"names": ["zoom_blur"], "weights": {"fog": 1}}, "not drawn: ['imagenet_c/fog']"),
        ({"names": []}, "names is empty"),
    ],
)
def test_random_corruption_rejects_inconsistent_configuration(kwargs, fragment):
    with pytest.raises(ValueError) as error:
        RandomCorruption(**kwargs)
    assert fragment in str(error.value)


def _official_lens_blur(image: np.ndarray, intensity: float) -> np.ndarray:
    """Robust-R1's lens_blur arithmetic (add_degradation.py), written independently: a
    (3 + 300 i) | 1-tap Gaussian (sigma 20 i) applied channel by channel in float32, the blur
    truncated to uint8, then blended with weights 1 - 0.7 i and 0.9 i (rounded, saturated)."""
    size = int(3 + intensity * 300) | 1
    kernel_1d = cv2.getGaussianKernel(size, intensity * 20)
    kernel = np.outer(kernel_1d, kernel_1d)
    blurred = np.stack(
        [cv2.filter2D(image[..., c].astype(np.float32), -1, kernel) for c in range(3)], axis=-1
    )
    truncated = np.trunc(blurred).astype(np.uint8)
    return cv2.addWeighted(image, 1 - 0.7 * intensity, truncated, 0.9 * intensity, 0)


@pytest.mark.parametrize("intensity", [0.05, 0.23, 0.45, 0.9, 1.0])
def test_lens_blur_matches_the_official_float_arithmetic_exactly(intensity):
    from skimage import data

    from robust_u1.corruptions.robust_r1 import lens_blur

    image = data.astronaut()[100:260, 150:330].copy()
    ours = lens_blur(image, intensity, np.random.default_rng(0))
    assert np.array_equal(ours, _official_lens_blur(image, intensity))
    # the previous arithmetic (blur of the uint8 image, rounded) is measurably different
    rounded = cv2.addWeighted(
        image, 1 - 0.7 * intensity, cv2.GaussianBlur(image, (0, 0), 20 * intensity), 0.9 * intensity, 0
    )
    assert not np.array_equal(rounded, ours)
    # through the public API as well (images >= 32 px are not padded)
    via_corrupt = corrupt(image, "robust_r1/lens_blur", intensity=intensity, seed=0)
    assert np.array_equal(via_corrupt, ours)
