"""Boxes between an original image and the model input it was resized, cropped and padded into.

The mapping is described by `image_info`, float32 `[4, 2]` in Model Garden's layout
(`official/vision/ops/preprocess_ops.py::resize_and_crop_image`): original (h, w), scaled (h, w), (y, x) scale,
(y, x) crop offset. A model-input pixel coordinate is `original * scale - offset`. Boxes are
`[ymin, xmin, ymax, xmax]` in pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf


def transform_boxes(boxes: tf.Tensor, image_info: tf.Tensor, output_size: Sequence[int]) -> tf.Tensor:
    """Pixel boxes of the original image -> boxes in the resized, cropped model input, clipped to the image part."""
    scaled = boxes * tf.tile(image_info[2], [2]) - tf.tile(image_info[3], [2])
    limit = tf.minimum(image_info[1] - image_info[3], tf.constant(output_size, tf.float32))
    return tf.clip_by_value(scaled, 0.0, tf.tile(limit, [2]))


def original_pixels(boxes, image_info) -> tf.Tensor:
    """Inverse of `transform_boxes` (without its clip): model-input boxes -> original-image pixels, float32.

    Args:
        boxes: `[N, 4]` with `image_info` `[4, 2]`, or a batch `[B, N, 4]` with `[B, 4, 2]`.
        image_info: See the module docstring.
    """
    image_info = tf.convert_to_tensor(image_info, tf.float32)
    scale = tf.expand_dims(tf.concat([image_info[..., 2, :]] * 2, axis=-1), -2)
    offset = tf.expand_dims(tf.concat([image_info[..., 3, :]] * 2, axis=-1), -2)
    return (tf.cast(boxes, tf.float32) + offset) / scale


def to_original_pixels(boxes, image_info) -> np.ndarray:
    """`original_pixels` for numpy callers (evaluation, LiteRT outputs)."""
    return original_pixels(boxes, image_info).numpy()
