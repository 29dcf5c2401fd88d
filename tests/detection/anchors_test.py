"""Anchors: Model Garden parity, hand-derived boxes, and the flat/per-level layout helpers."""

import math

import numpy as np
import pytest
import tensorflow as tf

from spinenet_tf.detection import anchors as anchors_lib

# The RetinaNet-SpineNet anchor setup (Model Garden's `official/vision/configs/retinanet.py`) on a non-square input.
CONFIG = dict(min_level=3, max_level=7, num_scales=3, aspect_ratios=[0.5, 1.0, 2.0], anchor_size=3)


@pytest.mark.oracle
@pytest.mark.parametrize("image_size", [(640, 512), (600, 500)])  # (600, 500): sizes not divisible by 2**7
def test_matches_model_garden_anchor(image_size):
    from official.vision.ops import anchor
    expected = anchor.Anchor(image_size=image_size, **CONFIG).multilevel_boxes
    ours = anchors_lib.generate_anchors(image_size=image_size, **CONFIG)
    assert sorted(ours) == [3, 4, 5, 6, 7]
    for level, boxes in ours.items():
        np.testing.assert_array_equal(boxes.numpy(), tf.reshape(expected[str(level)], [-1, 4]).numpy())


def test_hand_derived_boxes():
    anchors = anchors_lib.generate_anchors(image_size=(640, 512), **CONFIG)
    level3 = anchors[3].numpy()
    r = math.sqrt(2.0)
    # Level 3, location (0, 0): centre (4, 4) = stride 8 / 2. Scale 0: size 3 * 2**3 = 24.
    # Ratio 0.5 (w/h): w = 24 * sqrt(0.5) = 12 * sqrt(2), h = 24 / sqrt(0.5) = 24 * sqrt(2).
    np.testing.assert_allclose(level3[0], [4 - 12 * r, 4 - 6 * r, 4 + 12 * r, 4 + 6 * r], rtol=1e-6)
    np.testing.assert_allclose(level3[1], [-8, -8, 16, 16])  # ratio 1: 24 x 24 around (4, 4)
    # Anchor 3 = scale 1, ratio 0.5 (scale-major order): size 24 * 2**(1/3).
    s = 24 * 2 ** (1 / 3)
    np.testing.assert_allclose(level3[3], [4 - s * r / 2, 4 - s / r / 2, 4 + s * r / 2, 4 + s / r / 2], rtol=1e-6)
    # Location (0, 1) starts at index 9 (9 anchors per location): centre x = 4 + 8 = 12.
    np.testing.assert_allclose(level3[9 + 1], [-8, 0, 16, 24])
    # Location (1, 0) starts after one row of 512 / 8 = 64 locations: centre y = 12.
    np.testing.assert_allclose(level3[64 * 9 + 1], [0, -8, 24, 16])
    # Level 7, last location (4, 3) of a 5 x 4 map: centre (64 + 4 * 128, 64 + 3 * 128) = (576, 448);
    # its last anchor is scale 2, ratio 2: size 3 * 128 * 2**(2/3), w = size * sqrt(2), h = size / sqrt(2).
    s = 384 * 2 ** (2 / 3)
    np.testing.assert_allclose(anchors[7].numpy()[-1], [576 - s / r / 2, 448 - s * r / 2, 576 + s / r / 2,
                                                        448 + s * r / 2], rtol=1e-6)


def test_counts_and_feature_sizes():
    sizes = anchors_lib.feature_sizes(3, 7, (640, 512))
    assert sizes == {3: (80, 64), 4: (40, 32), 5: (20, 16), 6: (10, 8), 7: (5, 4)}
    flat = anchors_lib.concat_anchors(anchors_lib.generate_anchors(image_size=(640, 512), **CONFIG))
    assert flat.shape == (sum(h * w for h, w in sizes.values()) * 9, 4)


def test_anchor_generator_matches_function():
    generator = anchors_lib.AnchorGenerator(anchor_size=4.0)
    assert generator.anchors_per_location == 9
    ours = generator((256, 384))
    expected = anchors_lib.generate_anchors(3, 7, 3, [0.5, 1.0, 2.0], 4.0, (256, 384))
    for level in expected:
        np.testing.assert_array_equal(ours[level].numpy(), expected[level].numpy())
    assert anchors_lib.AnchorGenerator(**generator.get_config()).get_config() == generator.get_config()


def test_flatten_and_split_follow_the_anchor_layout():
    sizes = anchors_lib.feature_sizes(3, 4, (32, 16))  # {3: (4, 2), 4: (2, 1)}
    num_anchors, k = 2, 3
    head = {level: tf.random.normal([2, h, w, num_anchors * k]) for level, (h, w) in sizes.items()}
    flat = anchors_lib.flatten_levels(head, k)
    assert flat.shape == (2, (8 + 2) * num_anchors, k)
    # Flat index of (level 3, y=1, x=0, anchor 1) = (1 * 2 + 0) * 2 + 1 = 5.
    np.testing.assert_array_equal(flat[:, 5].numpy(), head[3][:, 1, 0, k:].numpy())
    back = anchors_lib.split_levels(flat, sizes, num_anchors)
    for level in sizes:
        np.testing.assert_array_equal(back[level].numpy(), head[level].numpy())
    with pytest.raises(ValueError, match="anchors per location"):
        anchors_lib.split_levels(flat[:, 1:], sizes, num_anchors)
