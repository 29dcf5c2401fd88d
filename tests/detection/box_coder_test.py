"""Box coder: hand-derived codes, round trip, the decode clip, and Model Garden parity."""

import math

import numpy as np
import pytest
import tensorflow as tf

from spinenet_tf.detection import box_coder


def _random_boxes(rng, n, size=640.0):
    yx = rng.uniform(0, size * 0.8, (n, 2))
    hw = rng.uniform(8, 200, (n, 2))  # any box at most 25x any anchor: inside the decode clip (62.5x)
    return tf.constant(np.concatenate([yx, yx + hw], axis=1), tf.float32)


def test_box_equal_to_anchor_encodes_to_zero():
    anchor = tf.constant([[10.0, 20.0, 50.0, 100.0]])
    np.testing.assert_allclose(box_coder.encode_boxes(anchor, anchor).numpy(), [[0, 0, 0, 0]], atol=1e-7)


def test_hand_derived_codes():
    anchor = tf.constant([[0.0, 0.0, 10.0, 10.0]])  # centre (5, 5), 10 x 10
    box = tf.constant([[5.0, 5.0, 15.0, 25.0]])  # centre (10, 15), h 10, w 20
    # ty = (10 - 5) / 10, tx = (15 - 5) / 10, th = log(10 / 10), tw = log(20 / 10).
    expected = [[0.5, 1.0, 0.0, math.log(2.0)]]
    np.testing.assert_allclose(box_coder.encode_boxes(box, anchor).numpy(), expected, rtol=1e-6, atol=1e-7)
    # Faster R-CNN weights multiply (ty, tx, th, tw).
    weighted = box_coder.encode_boxes(box, anchor, weights=[10.0, 10.0, 5.0, 5.0]).numpy()
    np.testing.assert_allclose(weighted, [[5.0, 10.0, 0.0, 5 * math.log(2.0)]], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(box_coder.decode_boxes(weighted, anchor, weights=[10.0, 10.0, 5.0, 5.0]).numpy(),
                               box.numpy(), rtol=1e-5)


@pytest.mark.parametrize("weights", [None, [10.0, 10.0, 5.0, 5.0]])
def test_round_trip(weights):
    rng = np.random.default_rng(0)
    anchors, boxes = _random_boxes(rng, 500), _random_boxes(rng, 500)
    codes = box_coder.encode_boxes(boxes, anchors, weights)
    np.testing.assert_allclose(box_coder.decode_boxes(codes, anchors, weights).numpy(), boxes.numpy(),
                               rtol=1e-4, atol=1e-3)


def test_decode_clips_log_sizes():
    anchor = tf.constant([[0.0, 0.0, 16.0, 16.0]])
    # th = tw = 10 would give exp(10) * 16; the clip log(1000 / 16) caps the size at 1000 px, centred at (8, 8).
    boxes = box_coder.decode_boxes(tf.constant([[0.0, 0.0, 10.0, 10.0]]), anchor).numpy()
    np.testing.assert_allclose(boxes, [[8 - 500, 8 - 500, 8 + 500, 8 + 500]], rtol=1e-5)


def test_clip_boxes():
    boxes = tf.constant([[[-5.0, 10.0, 700.0, 300.0]], [[-5.0, 10.0, 700.0, 300.0]]])
    np.testing.assert_array_equal(box_coder.clip_boxes(boxes, (640, 256)).numpy()[0], [[0, 10, 640, 256]])
    per_image = box_coder.clip_boxes(boxes, tf.constant([[640, 512], [100, 200]])).numpy()
    np.testing.assert_array_equal(per_image[:, 0], [[0, 10, 640, 300], [0, 10, 100, 200]])


def test_center_size():
    np.testing.assert_array_equal(box_coder.boxes_to_center_size(tf.constant([[2.0, 4.0, 12.0, 8.0]])).numpy(),
                                  [[7.0, 6.0, 10.0, 4.0]])


def test_rejects_wrong_layout():
    with pytest.raises(ValueError, match="last dimension of 4"):
        box_coder.encode_boxes(tf.zeros([3, 5]), tf.zeros([3, 4]))
    with pytest.raises(ValueError, match="codes must have a last dimension of 4"):
        box_coder.decode_boxes(tf.zeros([3, 2]), tf.zeros([3, 4]))
    with pytest.raises(ValueError, match="4 positive numbers"):
        box_coder.encode_boxes(tf.zeros([3, 4]), tf.zeros([3, 4]), weights=[1.0, 1.0])


@pytest.mark.oracle
@pytest.mark.parametrize("weights", [None, [10.0, 10.0, 5.0, 5.0]])
def test_matches_model_garden(weights):
    from official.vision.ops import box_ops
    rng = np.random.default_rng(1)
    anchors, boxes = _random_boxes(rng, 1000), _random_boxes(rng, 1000)
    np.testing.assert_array_equal(box_coder.encode_boxes(boxes, anchors, weights).numpy(),
                                  box_ops.encode_boxes(boxes, anchors, weights).numpy())
    # Large codes exercise the th / tw clip.
    codes = tf.constant(rng.normal(0, 3, (1000, 4)), tf.float32)
    np.testing.assert_array_equal(box_coder.decode_boxes(codes, anchors, weights).numpy(),
                                  box_ops.decode_boxes(codes, anchors, weights).numpy())
