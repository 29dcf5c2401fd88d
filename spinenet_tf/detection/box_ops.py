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


def to_original_pixels(boxes, image_info) -> np.ndarray:
    """Inverse of `transform_boxes` (without its clip), in numpy: model-input boxes [..., 4] -> original-image
    pixels."""
    image_info = np.asarray(image_info)
    return (np.asarray(boxes) + np.tile(image_info[3], 2)) / np.tile(image_info[2], 2)
