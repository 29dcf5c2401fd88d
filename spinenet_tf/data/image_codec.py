"""Image bytes for the files and records this package writes: PNG (lossless) or JPEG (quality 95)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# PNG at zlib level 1: the generated images' grain barely compresses, so higher levels only cost time.
_SAVE_OPTIONS = {"png": {"compress_level": 1}, "jpeg": {"quality": 95}}
EXTENSIONS = {"png": "png", "jpeg": "jpg"}


def encode_image(image: np.ndarray, image_format: str = "png") -> bytes:
    """PNG or JPEG bytes of a uint8 `[H, W, 3]` or `[H, W]` image.

    Raises:
        ValueError: If `image_format` is not "png" or "jpeg".
    """
    if image_format not in _SAVE_OPTIONS:
        raise ValueError(f"image_format={image_format!r}: must be 'png' or 'jpeg'")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=image_format, **_SAVE_OPTIONS[image_format])
    return buffer.getvalue()
