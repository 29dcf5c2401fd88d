"""Box-frame mask geometry (`mask_ops`): the bilinear sampler against scipy's (`map_coordinates`, order 1, edge
values extended: the oracle), crops of hand-drawn masks, and pasting back."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from spinenet_tf.detection import mask_ops


def _ellipse(height, width, box):
    """A filled ellipse inscribed in `box` (ymin, xmin, ymax, xmax pixel edges), sampled at pixel centres."""
    ymin, xmin, ymax, xmax = box
    y, x = np.mgrid[:height, :width] + 0.5
    return ((((y - (ymin + ymax) / 2) / ((ymax - ymin) / 2)) ** 2
             + ((x - (xmin + xmax) / 2) / ((xmax - xmin) / 2)) ** 2) <= 1).astype(np.uint8)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bilinear_sample_is_scipys_order_1_interpolation_with_edges_extended(dtype):
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, (3, 7, 9)).astype(dtype)
    rows = rng.uniform(-2, 9, (3, 5)).astype(dtype)       # some positions outside the map on each side
    cols = rng.uniform(-2, 11, (3, 4)).astype(dtype)
    sampled = mask_ops.bilinear_sample(tf.constant(values), tf.constant(rows), tf.constant(cols)).numpy()
    assert sampled.shape == (3, 5, 4) and sampled.dtype == dtype
    for n in range(3):
        y, x = np.meshgrid(rows[n], cols[n], indexing="ij")
        expected = ndimage.map_coordinates(values[n].astype(np.float64), [y, x], order=1, mode="nearest")
        np.testing.assert_allclose(sampled[n], expected, atol=1e-6 if dtype == np.float32 else 1e-12)


def test_cell_centres_tile_the_box():
    centres = mask_ops.cell_centres(tf.constant([10.0]), tf.constant([8.0]), 4).numpy()
    np.testing.assert_allclose(centres, [[11.0, 13.0, 15.0, 17.0]])
    corners = mask_ops.cell_centres(tf.constant([10.0]), tf.constant([8.0]), 4, offset=0.0).numpy()
    np.testing.assert_allclose(corners, [[10.0, 12.0, 14.0, 16.0]])


def test_crop_of_a_rectangle_mask_is_ones_inside_and_its_edge_blend_outside():
    mask = np.zeros((1, 40, 40, 1), np.uint8)
    mask[0, 10:30, 5:25] = 255
    inside = mask_ops.crop_masks(tf.constant(mask), tf.constant([[10.0, 5.0, 30.0, 25.0]]), 8).numpy()
    np.testing.assert_array_equal(inside, np.ones((1, 8, 8), np.float32))
    # A box reaching 16 px right of the rectangle, cells 4.5 px wide: cell 4's centre is at x = 25.25 px (index
    # 24.75), a quarter of the way from the rectangle's last column to the first empty one.
    half = mask_ops.crop_masks(tf.constant(mask), tf.constant([[10.0, 5.0, 30.0, 41.0]]), 8).numpy()[0]
    np.testing.assert_array_equal(half[:, :4], 1.0)
    np.testing.assert_allclose(half[:, 4], 0.25, atol=1e-6)
    np.testing.assert_array_equal(half[:, 5:], 0.0)


def test_crop_and_paste_give_back_the_masks():
    # 112 x 112 cells in boxes of at most ~80 px: every pixel is sampled, so the round trip is (nearly) exact.
    boxes = np.array([[10, 12, 60, 90], [40, 5, 120, 40], [0, 0, 128, 128], [70, 70, 85, 78]], np.float32)
    masks = np.stack([_ellipse(128, 128, box) for box in boxes])
    crops = mask_ops.crop_masks(tf.constant(masks[..., None] * 255), tf.constant(boxes), 112)
    pasted = mask_ops.paste_masks(crops.numpy(), boxes, 128, 128)
    assert pasted.shape == (4, 128, 128) and pasted.dtype == np.uint8
    for mask, back in zip(masks, pasted):
        assert _iou(mask, back) > 0.99


def test_paste_fills_the_pixels_whose_centres_are_in_the_box_and_skips_empty_boxes():
    boxes = np.array([[2.4, 3.6, 9.5, 20.0], [5, 5, 5, 9], [40, 40, 50, 50], [-4, -3, 2.2, 1.4]])
    pasted = mask_ops.paste_masks(np.ones((4, 6, 6), np.float32), boxes, 30, 32)
    expected = np.zeros((30, 32), np.uint8)
    expected[2:9, 4:20] = 1     # rows 2..8: centres 2.5..8.5 in [2.4, 9.5); columns 4..19: 4.5..19.5 in [3.6, 20)
    np.testing.assert_array_equal(pasted[0], expected)
    assert not pasted[1].any() and not pasted[2].any()   # no height; outside the image
    corner = np.zeros((30, 32), np.uint8)
    corner[0:2, 0:1] = 1
    np.testing.assert_array_equal(pasted[3], corner)


def test_paste_in_small_chunks_is_the_same(monkeypatch):
    rng = np.random.default_rng(1)
    masks = rng.uniform(0, 1, (6, 28, 28)).astype(np.float32)
    corners = rng.uniform(0, 90, (6, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(3, 40, (6, 2))], axis=1)
    whole = mask_ops.paste_masks(masks, boxes, 100, 110, threshold=0.4)
    monkeypatch.setattr(mask_ops, "_PASTE_SAMPLES", 500)    # about one box per chunk
    np.testing.assert_array_equal(mask_ops.paste_masks(masks, boxes, 100, 110, threshold=0.4), whole)
    assert whole.any()
