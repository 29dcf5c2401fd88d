"""Tests of `spinenet_tf.data.image_codec`: the bytes decode back to the image (PNG exactly, JPEG closely)."""

import io

import numpy as np
import pytest
from PIL import Image

from spinenet_tf.data import image_codec


def _image():
    return np.random.default_rng(0).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)


def test_png_round_trips_exactly():
    image = _image()
    with Image.open(io.BytesIO(image_codec.encode_image(image, "png"))) as decoded:
        assert decoded.format == "PNG"
        np.testing.assert_array_equal(np.asarray(decoded), image)


def test_jpeg_is_a_jpeg_of_the_image():
    image = np.full((24, 32, 3), 90, np.uint8)
    image[8:16, 8:24] = 200
    with Image.open(io.BytesIO(image_codec.encode_image(image, "jpeg"))) as decoded:
        assert decoded.format == "JPEG"
        assert np.abs(np.asarray(decoded).astype(int) - image).mean() < 3


def test_grayscale_png():
    mask = (np.arange(12).reshape(3, 4) % 2).astype(np.uint8)
    with Image.open(io.BytesIO(image_codec.encode_image(mask))) as decoded:
        np.testing.assert_array_equal(np.asarray(decoded), mask)


def test_unknown_format_is_one_line_error():
    with pytest.raises(ValueError, match="image_format='gif'"):
        image_codec.encode_image(_image(), "gif")
