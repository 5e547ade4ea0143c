"""Image I/O for corruptions: any PIL mode, numpy array or torch tensor in, the same kind out.

Every corruption works on an RGB ``uint8`` array of shape (H, W, 3). :func:`to_rgb` converts the
caller's image to that and returns a ``restore`` function that turns the corrupted RGB array back
into the caller's type, mode, dtype, shape and device. Which inputs are images, and how their
values are read, is the library's one image-input rule (`robust_u1.image_utils`); this module only
adds what corrupting needs on top of it: alpha is kept apart instead of composited, and the result
goes back to the input's kind.

Rules
-----
Colour
    Grey images are replicated to RGB, corrupted, and turned back into grey with ITU-R 601-2 luma
    (``0.299 R + 0.587 G + 0.114 B``). Alpha is never corrupted: it is returned unchanged.
Precision
    Corruptions run at 8-bit precision. ``uint16`` values (and PIL ``I`` / ``I;16*``) are read as
    0-65535 and scaled by 1/257; floats (and PIL ``F``) must be finite and in 0-1 (anything else is
    a ``ValueError`` naming the fix, never a clip); the output is scaled back to the input's range
    and dtype.
Orientation
    A PIL image with an EXIF orientation tag is corrupted upright and returned upright, without
    the tag (its width and height swap for orientations 5-8).
PIL modes
    ============================================  =============================================
    input mode                                    returned mode
    ============================================  =============================================
    RGB, RGBA, L, LA, I, I;16, I;16L/B/N, F       same mode
    CMYK, YCbCr, LAB, HSV, RGBX                   same mode (PIL converts to RGB and back)
    1                                             L (re-binarising would erase the corruption)
    P                                             RGB, or RGBA when it has transparency
                                                  (re-quantising to a palette would too)
    PA, RGBa                                      RGBA
    La                                            LA
    ============================================  =============================================
numpy
    (H, W) or (H, W, C) with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA); dtype uint8,
    uint16 (either byte order), int32 (read as 16-bit, like PIL ``I``) or float16/32/64.
torch
    (H, W) or (C, H, W) with C as above, or (H, W, C) where only the last side can be a channel
    count; dtype uint8, uint16 or any float (bfloat16 included); the result has the input's layout,
    dtype and device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..image_utils import image_array, open_image, to_uint8, upright

__all__ = ["open_image", "to_rgb"]

Restore = Callable[[np.ndarray], Any]

_RETURNED_MODE = {"1": "L", "PA": "RGBA", "RGBa": "RGBA", "La": "LA"}
_COLOUR_SPACE_MODES = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX"}


def to_rgb(image: Any) -> tuple[np.ndarray, Restore]:
    """Return ``(rgb, restore)``: an RGB uint8 (H, W, 3) array and its inverse conversion.

    Example:
        >>> rgb, restore = to_rgb(Image.new("L", (8, 4)))
        >>> rgb.shape, restore(rgb).mode
        ((4, 8, 3), 'L')
    """
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        return _numpy_to_rgb(image)
    if type(image).__module__.startswith("torch") and hasattr(image, "permute"):
        return _torch_to_rgb(image)
    raise TypeError(
        f"expected a PIL.Image.Image, a numpy.ndarray or a torch.Tensor; got {type(image).__name__}"
    )


def _channels_to_rgb(
    channels: np.ndarray, shape: tuple[int, ...], dtype: np.dtype
) -> tuple[np.ndarray, Restore]:
    """Split validated (H, W, C) channels into RGB uint8 + alpha; ``restore`` rebuilds ``shape`` /
    ``dtype`` with the alpha unchanged."""
    colour_channels = 3 if channels.shape[-1] >= 3 else 1
    colour = to_uint8(channels[..., :colour_channels])
    alpha = channels[..., colour_channels:]
    rgb = np.ascontiguousarray(np.broadcast_to(colour, colour.shape[:2] + (3,)))

    def restore(corrupted: np.ndarray) -> np.ndarray:
        if colour_channels == 1:
            corrupted = cv2.cvtColor(corrupted, cv2.COLOR_RGB2GRAY)[..., None]
        restored = np.concatenate([_scale_from_uint8(corrupted, channels.dtype), alpha], axis=-1)
        return restored.reshape(shape).astype(dtype, copy=False)

    return rgb, restore


def _numpy_to_rgb(array: np.ndarray) -> tuple[np.ndarray, Restore]:
    return _channels_to_rgb(image_array(array), array.shape, array.dtype)


def _scale_from_uint8(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.uint8:
        return values
    if dtype.kind == "f":
        return (values / 255.0).astype(dtype)
    return (values.astype(np.int64) * 257).astype(dtype)


def _pil_to_rgb(image: Image.Image) -> tuple[np.ndarray, Restore]:
    image = upright(image)
    mode = image.mode
    if mode == "P":
        returned = "RGBA" if "transparency" in image.info else "RGB"
    else:
        returned = _RETURNED_MODE.get(mode, mode)
    channels = image_array(image)  # validates the mode and the values
    if mode in _COLOUR_SPACE_MODES:  # corrupted as RGB, converted back below
        shape, dtype = channels.shape, channels.dtype
    else:  # the array PIL gives for the returned mode (e.g. big-endian for I;16B)
        native = np.asarray(image.convert(returned) if returned != mode else image)
        shape, dtype = native.shape, native.dtype
    rgb, restore_array = _channels_to_rgb(channels, shape, dtype)

    def restore(corrupted: np.ndarray) -> Image.Image:
        restored = Image.fromarray(restore_array(corrupted))
        return restored if restored.mode == returned else restored.convert(returned)

    return rgb, restore


def _torch_to_rgb(tensor: Any) -> tuple[np.ndarray, Restore]:
    import torch

    channels = image_array(tensor)  # validates shape, layout, dtype and values
    # image_array refuses shapes that read both ways, so a leading channel count means (C, H, W).
    channel_first = tensor.ndim == 3 and tensor.shape[0] in (1, 2, 3, 4)
    shape = tuple(channels.shape[:2]) if tensor.ndim == 2 else tuple(channels.shape)
    rgb, restore_array = _channels_to_rgb(channels, shape, channels.dtype)

    def restore(corrupted: np.ndarray) -> Any:
        restored = torch.from_numpy(np.ascontiguousarray(restore_array(corrupted)))
        if channel_first:
            restored = restored.permute(2, 0, 1).contiguous()
        return restored.to(device=tensor.device, dtype=tensor.dtype)

    return rgb, restore
