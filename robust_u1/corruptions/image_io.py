"""Image I/O for corruptions: any PIL mode, numpy array or torch tensor in, the same kind out.

Every corruption works on an RGB ``uint8`` array of shape (H, W, 3). :func:`to_rgb` converts the
caller's image to that and returns a ``restore`` function that turns the corrupted RGB array back
into the caller's type, mode, dtype, shape and device.

Rules
-----
Colour
    Grey images are replicated to RGB, corrupted, and turned back into grey with ITU-R 601-2 luma
    (``0.299 R + 0.587 G + 0.114 B``). Alpha is never corrupted: it is returned unchanged.
Precision
    Corruptions run at 8-bit precision. ``uint16`` values (and PIL ``I`` / ``I;16*``) are read as
    0-65535 and scaled by 1/257; floats (and PIL ``F``) are read as 0-1 and clipped to it; the
    output is scaled back to the input's range and dtype.
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
    (H, W) or (C, H, W) with C as above; dtype uint8, uint16 or any float (bfloat16 included); the
    result is on the input's device.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

Restore = Callable[[np.ndarray], Any]

_SAME_MODE = {"RGB", "RGBA", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_COLOUR_SPACE_MODES = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_NORMALISED_MODE = {"1": "L", "PA": "RGBA", "RGBa": "RGBA", "La": "LA"}
_SIXTEEN_BIT_MAX = 65535


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
    if _is_torch_tensor(image):
        return _torch_to_rgb(image)
    raise TypeError(
        f"expected a PIL.Image.Image, a numpy.ndarray or a torch.Tensor; got {type(image).__name__}"
    )


def _is_torch_tensor(value: Any) -> bool:
    # Checked by module name so that torch is only imported for callers who already use it.
    return type(value).__module__.startswith("torch") and hasattr(value, "permute")


def _numpy_to_rgb(array: np.ndarray) -> tuple[np.ndarray, Restore]:
    if not _is_supported_dtype(array.dtype):
        raise TypeError(
            f"unsupported array dtype {array.dtype}; use uint8 (0-255), uint16 (0-65535) or "
            "float (0-1), e.g. array.astype(np.uint8)"
        )
    if array.ndim == 2:
        channels = array[..., None]
    elif array.ndim == 3 and array.shape[-1] in (1, 2, 3, 4):
        channels = array
    else:
        raise ValueError(
            f"expected an image of shape (H, W) or (H, W, C) with C in 1-4; got {array.shape} "
            "(for a channel-first array use np.moveaxis(array, 0, -1); for a batch, loop over it)"
        )
    if channels.shape[0] == 0 or channels.shape[1] == 0:
        raise ValueError(f"image is empty: shape {array.shape}")

    colour_channels = 3 if channels.shape[-1] >= 3 else 1
    colour = _scale_to_uint8(channels[..., :colour_channels])
    alpha = channels[..., colour_channels:]
    rgb = np.ascontiguousarray(np.broadcast_to(colour, colour.shape[:2] + (3,)))

    def restore(corrupted: np.ndarray) -> np.ndarray:
        if colour_channels == 1:
            corrupted = cv2.cvtColor(corrupted, cv2.COLOR_RGB2GRAY)[..., None]
        restored = np.concatenate([_scale_from_uint8(corrupted, array.dtype), alpha], axis=-1)
        return restored.reshape(array.shape)

    return rgb, restore


def _is_supported_dtype(dtype: np.dtype) -> bool:
    # Either byte order: PIL's I;16B arrays are big-endian uint16. int32 is PIL's "I" mode.
    return (
        (dtype.kind == "u" and dtype.itemsize in (1, 2))
        or (dtype.kind == "f" and dtype.itemsize in (2, 4, 8))
        or (dtype.kind == "i" and dtype.itemsize == 4)
    )


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind == "f":
        unit = np.clip(np.nan_to_num(values.astype(np.float64)), 0.0, 1.0)
        return np.rint(unit * 255).astype(np.uint8)
    sixteen_bit = np.clip(values.astype(np.int64), 0, _SIXTEEN_BIT_MAX)
    return ((sixteen_bit + 128) // 257).astype(np.uint8)


def _scale_from_uint8(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.uint8:
        return values
    if dtype.kind == "f":
        return (values / 255.0).astype(dtype)
    return (values.astype(np.int64) * 257).astype(dtype)


def _pil_to_rgb(image: Image.Image) -> tuple[np.ndarray, Restore]:
    mode = image.mode
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
    elif mode in _NORMALISED_MODE:
        mode = _NORMALISED_MODE[mode]
        image = image.convert(mode)

    if mode in _COLOUR_SPACE_MODES:
        rgb, restore_rgb = _pil_to_rgb(image.convert("RGB"))
        return rgb, lambda corrupted: restore_rgb(corrupted).convert(mode)
    if mode not in _SAME_MODE:
        raise ValueError(
            f"unsupported PIL mode {image.mode!r}; convert it first, e.g. image.convert('RGB')"
        )

    array = np.asarray(image)
    if mode == "F":
        # F images carry 0-1 values by our float convention, so go through the float path.
        array = array.astype(np.float32)
    rgb, restore_array = _numpy_to_rgb(array)

    def restore(corrupted: np.ndarray) -> Image.Image:
        restored = Image.fromarray(restore_array(corrupted))
        return restored if restored.mode == mode else restored.convert(mode)

    return rgb, restore


def _torch_to_rgb(tensor: Any) -> tuple[np.ndarray, Restore]:
    import torch

    if tensor.ndim not in (2, 3):
        raise ValueError(
            f"expected a tensor of shape (H, W) or (C, H, W); got {tuple(tensor.shape)} "
            "(for a batch, loop over its images)"
        )
    if tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise TypeError(f"unsupported tensor dtype {tensor.dtype}; use uint8 or a float dtype")
    # numpy has no bfloat16: read it as float32 and cast back at the end.
    host = tensor.detach().cpu()
    if host.dtype == torch.bfloat16:
        host = host.float()
    channels_last = host if tensor.ndim == 2 else host.permute(1, 2, 0)
    rgb, restore_array = _numpy_to_rgb(channels_last.numpy())

    def restore(corrupted: np.ndarray) -> Any:
        restored = torch.from_numpy(np.ascontiguousarray(restore_array(corrupted)))
        if tensor.ndim == 3:
            restored = restored.permute(2, 0, 1).contiguous()
        return restored.to(device=tensor.device, dtype=tensor.dtype)

    return rgb, restore


def open_image(path: str | os.PathLike) -> Image.Image:
    """Reads an image file completely (in its own mode); a missing, truncated or non-image file is a
    `ValueError` that names the file.

    Example:
        >>> open_image("missing.png")
        Traceback (most recent call last):
        ...
        ValueError: Image file not found: missing.png
    """
    if not os.path.isfile(path):
        raise ValueError(f"Image file not found: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"Cannot read {path} as an image ({error}); is it a complete image file?") from error
