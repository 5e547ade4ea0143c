"""Image input and output of Robust-U1: the one rule every entry point follows.

``recover()``, ``answer()``, ``generate()``, the ``robust-vqa`` pipeline, the processor, the
collators, the rewards, the corruptions, the evaluation harness and the CLI all read images through
this module, so an image means the same thing everywhere.

Image input rule
----------------
Files (``str`` / ``os.PathLike``, raw ``bytes``, a binary file object)
    Read completely with PIL; the EXIF orientation is applied (the pixels are made upright and the
    tag is dropped), as phone cameras and image viewers expect. A missing, truncated or non-image
    file is a ``ValueError`` that names it.
PIL images
    Any mode. An EXIF orientation tag other than 1 is applied the same way. ``P`` becomes ``RGB``,
    or ``RGBA`` when it has transparency; ``1`` becomes ``L``; ``PA`` / ``RGBa`` become ``RGBA`` and
    ``La`` ``LA``; colour spaces (``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``) go through
    ``Image.convert("RGB")``. ``I;16*`` and ``I`` are 16-bit (0-65535), ``F`` is float (0-1).
numpy arrays
    ``(H, W)`` or ``(H, W, C)`` with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA); dtype
    ``uint8`` (0-255), ``uint16`` either byte order (0-65535), ``int32`` (PIL's ``I``, 0-65535) or
    ``float16/32/64`` (0-1). A channel-first array is refused with the ``np.moveaxis`` fix.
torch tensors
    ``(H, W)`` or ``(C, H, W)`` with C as above; ``(H, W, C)`` is recognised when only the last
    side can be a channel count (e.g. 64×48×3). A shape that reads both ways (4×4×3: a 4×4 RGB image
    or a 4×3 RGBA one) is refused rather than guessed. Dtypes ``uint8``, ``uint16``, ``int32`` and
    every float (``bfloat16`` and ``float16`` included); the tensor may be on any device.
Values
    Float data must be finite and in [0, 1]: NaN / ±inf or values outside [0, 1] are a ``ValueError``
    that names the range found and the fix (``image / 255`` for 0-255 data). Nothing is clamped.
    16-bit data is brought to 8 bits as ``(v + 128) // 257`` (exact inverse of ``v * 257``).
Colour
    Grey is replicated to RGB. Where one RGB image is needed (the model, rewards, metrics), alpha is
    composited on white as BAGEL's ``pil_img2rgb`` does: ``round(c · a + 255 · (1 - a))``.
    The corruptions keep alpha apart and return it unchanged (see `robust_u1.corruptions.image_io`).

Conversions: `to_rgb_image` (PIL RGB), `to_rgb_array` (uint8 HWC), `to_float_tensor` (float32 CHW in
[0, 1], float inputs keep their precision), `image_array` (the validated channels-last array, for
code that keeps alpha apart). Output: `save_image` writes atomically and converts modes the target
format cannot hold.

Example:
    >>> import numpy as np
    >>> to_rgb_image(np.zeros((4, 5), np.uint8)).size
    (5, 4)
    >>> to_rgb_array(np.full((2, 2), 200.0))
    Traceback (most recent call last):
    ...
    ValueError: float image values must be in [0, 1]; got values in [200, 200] (for 0-255 data divide by 255, e.g. image / 255)
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ImageInput",
    "image_array",
    "open_image",
    "save_image",
    "to_float_tensor",
    "to_rgb_array",
    "to_rgb_image",
    "to_uint8",
]

logger = logging.getLogger(__name__)

ImageInput = Union[Image.Image, np.ndarray, "torch.Tensor", str, os.PathLike]

_SIXTEEN_BIT_MAX = 65535
_CHANNEL_COUNTS = (1, 2, 3, 4)
_NATIVE_MODES = {"RGB", "RGBA", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_COLOUR_SPACE_MODES = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_NORMALISED_MODES = {"1": "L", "PA": "RGBA", "RGBa": "RGBA", "La": "LA"}
_EXIF_ORIENTATION = 0x0112


# --------------------------------------------------------------------------------------------- files


def open_image(source: str | os.PathLike | bytes | bytearray | BinaryIO) -> Image.Image:
    """Read an image file (path, bytes or binary file object) completely, in its own mode, with its
    EXIF orientation applied. A missing, truncated or non-image file is a `ValueError` naming it.

    Example:
        >>> open_image("missing.png")
        Traceback (most recent call last):
        ...
        ValueError: Image file not found: missing.png
    """
    if isinstance(source, (bytes, bytearray)):
        name, stream = f"<{len(source)} bytes>", io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise ValueError(f"Image file not found: {os.fspath(source)}")
        name, stream = os.fspath(source), source
    else:
        name, stream = getattr(source, "name", "<file object>"), source
    try:
        with Image.open(stream) as opened:
            opened.load()
            # A copy in every case: closing the file releases the pixels of the opened image.
            return upright(opened) if _orientation(opened) != 1 else opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"Cannot read {name} as an image ({error}); is it a complete image file?") from error


def upright(image: Image.Image) -> Image.Image:
    """``image`` with its EXIF orientation applied (a copy without the tag), or ``image`` itself.

    Example:
        >>> upright(Image.new("RGB", (4, 2))).size
        (4, 2)
    """
    return ImageOps.exif_transpose(image) if _orientation(image) != 1 else image


def _orientation(image: Image.Image) -> int:
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    return orientation if orientation in range(1, 9) else 1


# ------------------------------------------------------------------------------- the validated array


def image_array(image: Image.Image | np.ndarray | Any) -> np.ndarray:
    """The image as a validated channels-last numpy array (H, W, C), C in 1-4, in its own dtype.

    The dtype is one of uint8, uint16 (native byte order), int32 (16-bit values) or float (finite,
    in [0, 1]); see the module docstring for the rule. Paths are not accepted here (use
    `open_image` first); torch tensors come back on the CPU (bfloat16 / float16 as float32).

    Example:
        >>> image_array(Image.new("LA", (3, 2))).shape
        (2, 3, 2)
    """
    if isinstance(image, Image.Image):
        array = _pil_array(image)
    elif isinstance(image, np.ndarray):
        array = _checked_numpy(image)
    elif _is_torch_tensor(image):
        array = _checked_numpy(_torch_to_channels_last(image))
    else:
        raise TypeError(
            f"Unsupported image type {type(image).__name__}: expected a PIL.Image.Image, a numpy.ndarray "
            "or a torch.Tensor (or a file path where files are accepted)"
        )
    _check_values(array)
    return array


def _is_torch_tensor(value: Any) -> bool:
    # Checked by module name so that torch is only imported for callers who already use it.
    return type(value).__module__.startswith("torch") and hasattr(value, "permute")


def _pil_array(image: Image.Image) -> np.ndarray:
    if image.width == 0 or image.height == 0:
        raise ValueError(f"image is empty: size {image.size}")
    image = upright(image)
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in _NORMALISED_MODES:
        image = image.convert(_NORMALISED_MODES[mode])
    elif mode in _COLOUR_SPACE_MODES:
        image = image.convert("RGB")
    elif mode not in _NATIVE_MODES:
        raise ValueError(f"unsupported PIL mode {mode!r}; convert it first, e.g. image.convert('RGB')")
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def _checked_numpy(array: np.ndarray) -> np.ndarray:
    if not _is_supported_dtype(array.dtype):
        raise TypeError(
            f"unsupported array dtype {array.dtype}; use uint8 (0-255), uint16 (0-65535) or "
            "float (0-1), e.g. array.astype(np.uint8)"
        )
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 4:
        raise ValueError(f"expected one image; got a batch of shape {array.shape} (for a batch, loop over it)")
    elif array.ndim != 3 or array.shape[-1] not in _CHANNEL_COUNTS:
        channel_first = array.ndim == 3 and array.shape[0] in _CHANNEL_COUNTS
        raise ValueError(
            f"expected an image array of shape (H, W) or (H, W, C) with C in 1-4; got {array.shape}"
            + (", which looks channel-first: use np.moveaxis(array, 0, -1)" if channel_first else "")
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image is empty: shape {array.shape}")
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not np.little_endian):
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def _is_supported_dtype(dtype: np.dtype) -> bool:
    # Either byte order: PIL's I;16B arrays are big-endian uint16. int32 is PIL's "I" mode.
    return (
        (dtype.kind == "u" and dtype.itemsize in (1, 2))
        or (dtype.kind == "f" and dtype.itemsize in (2, 4, 8))
        or (dtype.kind == "i" and dtype.itemsize == 4)
    )


def _torch_to_channels_last(tensor: Any) -> np.ndarray:
    import torch

    shape = tuple(tensor.shape)
    if tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise TypeError(f"unsupported tensor dtype {tensor.dtype}; use uint8 (0-255) or a float dtype (0-1)")
    host = tensor.detach().cpu()
    if host.dtype in (torch.bfloat16, torch.float16):
        host = host.float()  # numpy has no bfloat16; float32 holds both exactly
    if host.ndim == 2:
        return host.numpy()
    if host.ndim == 4:
        raise ValueError(f"expected one image tensor; got a batch of shape {shape} (loop over its images)")
    if host.ndim != 3:
        raise ValueError(
            f"expected an image tensor of shape (H, W) or (C, H, W) with C in 1-4; got {shape} "
            "(for a batch, loop over its images)"
        )
    channel_first, channel_last = shape[0] in _CHANNEL_COUNTS, shape[-1] in _CHANNEL_COUNTS
    if channel_first and channel_last:
        raise ValueError(
            f"image tensor of shape {shape} is ambiguous: it reads as (C, H, W) and as (H, W, C); "
            "pass a numpy (H, W, C) array or a PIL image for images this small"
        )
    if channel_first:
        return host.permute(1, 2, 0).numpy()
    if channel_last:
        return host.numpy()
    raise ValueError(
        f"expected an image tensor of shape (H, W) or (C, H, W) with C in 1-4; got {shape} "
        "(for a batch, loop over its images)"
    )


def _check_values(array: np.ndarray) -> None:
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            bad = array[~finite]
            kinds = " and ".join(
                name for name, found in (("NaN", np.isnan(bad).any()), ("inf", np.isinf(bad).any())) if found
            )
            raise ValueError(
                f"image has {int(bad.size)} non-finite values ({kinds}); float images must be finite and in [0, 1]"
            )
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            if low >= 0.0 and high <= 255.0:
                fix = "for 0-255 data divide by 255, e.g. image / 255"
            elif low >= -1.0 and high <= 1.0:
                fix = "for [-1, 1] data use image * 0.5 + 0.5"
            else:
                fix = "rescale it to [0, 1] first"
            raise ValueError(f"float image values must be in [0, 1]; got values in [{low:.4g}, {high:.4g}] ({fix})")
    elif array.dtype.kind == "i":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > _SIXTEEN_BIT_MAX:
            raise ValueError(
                f"int32 image values are read as 16-bit and must be in [0, 65535]; got [{low}, {high}]"
            )


# ------------------------------------------------------------------------------------- conversions


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Values of a validated image array at 8 bits: uint8 as is, 16-bit as ``(v + 128) // 257``,
    floats as ``round(v · 255)``.

    Example:
        >>> to_uint8(np.array([0, 257, 65535], np.uint16))
        array([  0,   1, 255], dtype=uint8)
    """
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind == "f":
        return np.rint(values.astype(np.float64) * 255).astype(np.uint8)
    return ((values.astype(np.int64) + 128) // 257).astype(np.uint8)


def _unit_float(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as float32 (floats keep their precision)."""
    if values.dtype.kind == "f":
        return values.astype(np.float32)
    scale = 255.0 if values.dtype == np.uint8 else float(_SIXTEEN_BIT_MAX)
    return (values.astype(np.float32) / scale).astype(np.float32)


def to_rgb_array(image: ImageInput) -> np.ndarray:
    """Any image input → RGB ``uint8`` array (H, W, 3), alpha composited on white.

    Example:
        >>> to_rgb_array(np.zeros((2, 3, 4), np.uint8))[0, 0]  # fully transparent black → white
        array([255, 255, 255], dtype=uint8)
    """
    array = image_array(_opened(image))
    channels = array.shape[-1]
    colour = array[..., :3] if channels >= 3 else array[..., :1]
    if channels in (2, 4):
        alpha = array[..., -1:]
        if array.dtype == np.uint8:  # integer path, exactly BAGEL's white.paste(image, mask=alpha)
            c, a = colour.astype(np.int32), alpha.astype(np.int32)
            colour = np.rint((c * a + 255 * (255 - a)) / 255.0).astype(np.uint8)
        else:
            c, a = _unit_float(colour).astype(np.float64), _unit_float(alpha).astype(np.float64)
            colour = np.rint((c * a + (1.0 - a)) * 255).astype(np.uint8)
    else:
        colour = to_uint8(colour)
    return np.array(np.broadcast_to(colour, colour.shape[:2] + (3,)))  # a writable copy


def to_rgb_image(image: ImageInput) -> Image.Image:
    """Any image input → an RGB PIL image (see the module docstring for the rule).

    Example:
        >>> to_rgb_image(Image.new("RGBA", (2, 2), (10, 20, 30, 0))).getpixel((0, 0))
        (255, 255, 255)
    """
    image = _opened(image)
    if isinstance(image, Image.Image) and image.mode == "RGB" and _orientation(image) == 1:
        return image.convert("RGB")  # a copy, detached from any file
    return Image.fromarray(to_rgb_array(image), "RGB")


def to_float_tensor(image: ImageInput) -> torch.Tensor:
    """Any image input → a float32 CPU tensor (3, H, W) in [0, 1]; alpha composited on white.

    Float inputs keep their precision (no 8-bit rounding); integer inputs are divided by 255
    (uint8) or 65535 (16-bit).

    Example:
        >>> to_float_tensor(np.zeros((32, 48, 3), np.uint8)).shape
        torch.Size([3, 32, 48])
    """
    import torch

    array = image_array(_opened(image))
    channels = array.shape[-1]
    colour = _unit_float(array[..., :3] if channels >= 3 else array[..., :1])
    if channels in (2, 4):
        alpha = _unit_float(array[..., -1:])
        colour = colour * alpha + (1.0 - alpha)
    colour = np.broadcast_to(colour, colour.shape[:2] + (3,))
    return torch.from_numpy(np.array(colour.transpose(2, 0, 1), dtype=np.float32, order="C"))


def _opened(image: Any) -> Any:
    return open_image(image) if isinstance(image, (str, os.PathLike)) else image


# ------------------------------------------------------------------------------------------ output


def save_image(image: Image.Image, path: str | os.PathLike, format: str | None = None, **params: Any) -> Path:
    """Write ``image`` to ``path`` atomically; returns the path.

    The image is encoded in memory first, so a mode the format cannot hold is found before the output
    is touched: it is converted (alpha composited on white for formats without alpha, 16-bit and
    float grey to 8-bit ``L``, anything else to ``RGB``) with a warning, or refused with a
    `ValueError`. The bytes go to a temporary file in the same folder that is then renamed over
    ``path``, so an existing file is never truncated or emptied by a failure. No EXIF orientation
    tag is written: the pixels are stored upright.

    Example:
        >>> save_image(Image.new("RGBA", (4, 4)), "out.jpg")  # doctest: +SKIP
        PosixPath('out.jpg')
    """
    path = Path(path)
    format = format or Image.registered_extensions().get(path.suffix.lower())
    if format is None:
        raise ValueError(f"cannot tell the image format of {path.name!r}; use an extension such as .png or .jpg")
    data = _encode(image, format, params)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def _encode(image: Image.Image, format: str, params: dict[str, Any]) -> bytes:
    candidates = [image]
    fallback = _storable(image)
    if fallback is not image:
        candidates.append(fallback)
    error: Exception | None = None
    for index, candidate in enumerate(candidates):
        buffer = io.BytesIO()
        try:
            candidate.save(buffer, format=format, **params)
        except (OSError, KeyError, ValueError, TypeError) as failure:
            error = failure
            continue
        if index:
            logger.warning("%s cannot hold mode %s; writing it as %s", format, image.mode, candidate.mode)
        return buffer.getvalue()
    raise ValueError(f"cannot write a mode {image.mode} image as {format} ({error})") from error


def _storable(image: Image.Image) -> Image.Image:
    """The most common mode a format can hold that keeps the image's meaning."""
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    grey = image.getbands() in (("L",), ("L", "A"), ("I",), ("F",), ("1",), ("L", "a"))
    if has_alpha or image.mode in ("I", "F") or image.mode.startswith("I;16") or image.mode == "P":
        rgb = Image.fromarray(to_rgb_array(image), "RGB")
        return rgb.convert("L") if grey and image.mode != "P" else rgb
    return image.convert("RGB")
