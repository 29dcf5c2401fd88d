"""Boxes between the original image and the model input (`box_ops`), on `image_info` values worked out by hand."""

import numpy as np
import tensorflow as tf

from spinenet_tf.detection import box_ops

# A 200 x 100 image scaled by 1.28 to 256 x 128 into a 256 x 256 input (no crop).
FIT = np.array([[200, 100], [256, 128], [1.28, 1.28], [0, 0]], np.float32)
# A 100 x 100 image scaled by 2 to 200 x 200, cropped at (y, x) = (40, 10) into a 128 x 128 input.
CROPPED = np.array([[100, 100], [200, 200], [2, 2], [40, 10]], np.float32)


def test_transform_boxes_scales_shifts_and_clips_to_the_image_part():
    boxes = tf.constant([[10.0, 20.0, 100.0, 50.0], [150.0, 90.0, 200.0, 100.0]])
    np.testing.assert_allclose(box_ops.transform_boxes(boxes, tf.constant(FIT), (256, 256)).numpy(),
                               [[12.8, 25.6, 128.0, 64.0], [192.0, 115.2, 256.0, 128.0]], rtol=1e-6)
    # (10, 0, 50, 100) * 2 - (40, 10, 40, 10) = (-20, -10, 60, 190): clipped to the 128 x 128 input.
    np.testing.assert_allclose(box_ops.transform_boxes(tf.constant([[10.0, 0.0, 50.0, 100.0]]), tf.constant(CROPPED),
                                                       (128, 128)).numpy(), [[0.0, 0.0, 60.0, 128.0]])


def test_to_original_pixels_inverts_the_transform_inside_the_input():
    boxes = np.array([[12.8, 25.6, 128.0, 64.0], [0.0, 0.0, 60.0, 100.0]], np.float32)
    np.testing.assert_allclose(box_ops.to_original_pixels(boxes[:1], FIT), [[10.0, 20.0, 100.0, 50.0]], rtol=1e-6)
    np.testing.assert_allclose(box_ops.to_original_pixels(boxes[1:], CROPPED), [[20.0, 5.0, 50.0, 55.0]])
    inside = box_ops.transform_boxes(tf.constant([[30.0, 20.0, 60.0, 55.0]]), tf.constant(CROPPED), (128, 128))
    np.testing.assert_allclose(box_ops.to_original_pixels(inside.numpy(), CROPPED), [[30.0, 20.0, 60.0, 55.0]])


def test_original_pixels_of_a_batch_uses_each_images_info():
    boxes = tf.constant([[[0.0, 0.0, 10.0, 10.0]], [[0.0, 0.0, 10.0, 10.0]]])
    batched = box_ops.original_pixels(boxes, tf.stack([FIT, CROPPED]))
    # FIT: (0, 0, 10, 10) / 1.28; CROPPED: ((0, 0, 10, 10) + (40, 10, 40, 10)) / 2.
    np.testing.assert_allclose(batched.numpy(), [[[0.0, 0.0, 7.8125, 7.8125]], [[20.0, 5.0, 25.0, 10.0]]], rtol=1e-6)
