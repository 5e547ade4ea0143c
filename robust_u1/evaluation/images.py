"""Decode the image encodings found in benchmark files into RGB PIL images.

Only the benchmark encodings (``{"bytes", "path"}`` dicts, base64 text) are handled here; reading the
bytes and the pixels follows the library's one image-input rule (`robust_u1.image_utils`: EXIF
orientation applied, alpha composited on white, 16-bit rescaled).
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from PIL import Image

from ..image_utils import open_image, to_rgb_image


def decode_image(value: Any) -> Image.Image:
    """Decode a PIL image, ``{"bytes": …}`` / ``{"path": …}`` dict, raw bytes, base64 string or file path.

    Example:
        >>> from PIL import Image
        >>> decode_image(Image.new("L", (2, 2))).mode
        'RGB'
    """
    if isinstance(value, Image.Image):
        return to_rgb_image(value)
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return decode_image(value["bytes"])
        if value.get("path"):
            return decode_image(value["path"])
        raise ValueError("Image dict has neither 'bytes' nor 'path'.")
    if isinstance(value, (bytes, bytearray)):
        return to_rgb_image(open_image(value))
    if isinstance(value, (str, os.PathLike)):
        if os.path.exists(value):
            return to_rgb_image(open_image(value))
        # VLMEvalKit TSVs store images as base64 text.
        try:
            return decode_image(base64.b64decode(str(value), validate=True))
        except binascii.Error:
            raise ValueError(f"{str(value)[:60]!r} is neither an existing file nor base64 image data.") from None
    raise TypeError(f"Cannot decode an image from {type(value).__name__}.")
