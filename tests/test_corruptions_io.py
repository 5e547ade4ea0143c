"""Image I/O rules of robust_u1.corruptions: PIL modes, numpy dtypes/shapes, torch tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from robust_u1.corruptions import corrupt

RGB = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8))


def noisy(image):
    return corrupt(image, "robust_r1/gaussian_noise", intensity=0.45, seed=1)


@pytest.mark.parametrize(
    ("mode", "returned"),
    [
        ("RGB", "RGB"),
        ("RGBA", "RGBA"),
        ("L", "L"),
        ("LA", "LA"),
        ("I", "I"),
        ("I;16", "I;16"),
        ("I;16B", "I;16B"),
        ("F", "F"),
        ("CMYK", "CMYK"),
        ("YCbCr", "YCbCr"),
        ("HSV", "HSV"),
        ("LAB", "LAB"),
        ("RGBX", "RGBX"),
        ("1", "L"),
        ("P", "RGB"),
        ("PA", "RGBA"),
        ("RGBa", "RGBA"),
    ],
)
def test_pil_modes_follow_the_documented_rule(mode, returned):
    image = RGB.convert(mode)
    if mode == "F":  # PIL's convert("F") keeps 0-255; float images are 0-1 by the input rule
        image = image.point(lambda value: value / 255)
    corrupted = noisy(image)
    assert (corrupted.mode, corrupted.size) == (returned, image.size)
    assert np.asarray(corrupted).tobytes() != np.asarray(image.convert(returned)).tobytes()


def test_palette_with_transparency_becomes_rgba_and_keeps_alpha():
    palette = RGB.convert("P")
    palette.info["transparency"] = 0
    corrupted = noisy(palette)
    assert corrupted.mode == "RGBA"
    assert np.array_equal(
        np.asarray(corrupted)[..., 3], np.asarray(palette.convert("RGBA"))[..., 3]
    )


def test_grey_is_corrupted_as_rgb_and_returned_as_luma():
    grey = RGB.convert("L")
    expected = Image.fromarray(noisy(np.asarray(grey.convert("RGB")))).convert("L")
    # same RGB corruption; luma via OpenCV (0.299, 0.587, 0.114) may round 1 level off PIL's
    difference = np.abs(np.asarray(noisy(grey), int) - np.asarray(expected, int))
    assert difference.max() <= 1


def test_sixteen_bit_and_float_images_are_rescaled_to_8_bit_and_back():
    sixteen = RGB.convert("L").point(lambda v: v * 257, "I").convert("I;16")
    corrupted = noisy(sixteen)
    values = np.asarray(corrupted)
    assert values.dtype == np.uint16 and (values % 257 == 0).all() and values.max() > 255
    floats = np.asarray(RGB, np.float32) / 255
    out = noisy(floats)
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert np.allclose(out * 255, np.round(out * 255), atol=1e-4)  # 8-bit steps


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((24, 20), np.uint8),
        ((24, 20, 1), np.uint8),
        ((24, 20, 2), np.uint8),
        ((24, 20, 3), np.uint16),
        ((24, 20, 4), np.float32),
        ((24, 20, 3), np.float64),
        ((24, 20), np.float16),
    ],
)
def test_numpy_arrays_keep_shape_dtype_and_alpha(shape, dtype):
    rng = np.random.default_rng(1)
    if np.dtype(dtype).kind == "f":
        array = rng.random(shape).astype(dtype)
    else:
        array = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    corrupted = noisy(array)
    assert (corrupted.shape, corrupted.dtype) == (array.shape, array.dtype)
    if len(shape) == 3 and shape[2] in (2, 4):
        assert np.array_equal(corrupted[..., -1], array[..., -1])


@pytest.mark.parametrize(
    ("array", "error", "fragment"),
    [
        (np.zeros((8, 8), np.int64), TypeError, "unsupported array dtype int64"),
        (np.zeros((8, 8), bool), TypeError, "unsupported array dtype bool"),
        (np.zeros((3, 8, 8)), ValueError, "np.moveaxis(array, 0, -1)"),
        (np.zeros((2, 8, 8, 3), np.uint8), ValueError, "for a batch, loop over it"),
        (np.zeros((0, 8, 3), np.uint8), ValueError, "image is empty"),
        ([[0, 1]], TypeError, "expected a PIL.Image.Image, a numpy.ndarray or a torch.Tensor"),
    ],
)
def test_unsupported_arrays_are_rejected_with_the_fix(array, error, fragment):
    with pytest.raises(error) as raised:
        noisy(array)
    assert fragment in str(raised.value)


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((3, 24, 20), torch.uint8),
        ((3, 24, 20), torch.float32),
        ((24, 20), torch.bfloat16),
        ((4, 24, 20), torch.float64),
    ],
)
def test_torch_tensors_keep_shape_dtype_and_device(shape, dtype):
    tensor = (torch.rand(shape) * (255 if dtype == torch.uint8 else 1)).to(dtype)
    corrupted = noisy(tensor)
    assert (corrupted.shape, corrupted.dtype, corrupted.device) == (
        tensor.shape,
        tensor.dtype,
        tensor.device,
    )
    assert not torch.equal(corrupted, tensor)


def test_torch_and_numpy_give_the_same_pixels():
    array = np.asarray(RGB)
    from_tensor = noisy(torch.from_numpy(array.copy()).permute(2, 0, 1))
    assert np.array_equal(from_tensor.permute(1, 2, 0).numpy(), noisy(array))


def test_torch_batches_are_rejected():
    with pytest.raises(ValueError, match=r"loop over its images"):
        noisy(torch.zeros(2, 3, 8, 8))


def test_small_images_are_padded_not_rejected():
    for size in ((1, 1), (2, 7), (31, 5)):
        image = Image.new("RGB", size, (200, 30, 30))
        out = corrupt(image, "imagenet_c/pixelate", severity=5, seed=0)
        assert out.size == size
