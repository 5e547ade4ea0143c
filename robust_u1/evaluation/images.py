"""Decode the image encodings found in benchmark files into RGB PIL images."""

from __future__ import annotations

import base64
import binascii
import io
import os
from typing import Any

from PIL import Image


def decode_image(value: Any) -> Image.Image:
    """Decode a PIL image, ``{"bytes": …}`` / ``{"path": …}`` dict, raw bytes, base64 string or file path.

    Example:
        >>> from PIL import Image
        >>> decode_image(Image.new("L", (2, 2))).mode
        'RGB'
    """
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return decode_image(value["bytes"])
        if value.get("path"):
            return decode_image(value["path"])
        raise ValueError("Image dict has neither 'bytes' nor 'path'.")
    if isinstance(value, (bytes, bytearray)):
        with Image.open(io.BytesIO(value)) as image:
            return image.convert("RGB")
    if isinstance(value, str):
        if os.path.exists(value):
            with Image.open(value) as image:
                return image.convert("RGB")
        # VLMEvalKit TSVs store images as base64 text.
        try:
            return decode_image(base64.b64decode(value, validate=True))
        except binascii.Error:
            raise ValueError(f"{value[:60]!r} is neither an existing file nor base64 image data.") from None
    raise TypeError(f"Cannot decode an image from {type(value).__name__}.")
