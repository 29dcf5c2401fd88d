"""Instance masks from COCO segmentations and PNGs: the masks are the annotations' rasterisations, and every bad
case is repaired or dropped with one record naming it.

Golden masks come from numpy (rectangles, hand-made run lengths), from the built-in generator's exact masks, or
from pycocotools on the unrepaired polygon (what COCO's own tools make of it), never from the code under test.
"""

import io

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from spinenet_tf.data import bad_data
from spinenet_tf.data import builtin_shapes as bs
from spinenet_tf.data import instance_masks as im

H, W = 40, 60
NAME = "annotation 7 (a.jpg)"


class _Log:
    """Collects `record(kind, item, message)` calls, as `DataStats` receives them."""

    def __init__(self):
        self.records = []

    def record(self, kind, item, message=None):
        assert kind in bad_data.STAT_KINDS, kind
        self.records.append((kind, item, message))

    def kinds(self):
        return [kind for kind, _, _ in self.records]


def _mask(segmentation, height=H, width=W):
    """`coco_segmentation_to_rle` -> (mask [H, W] uint8 or None, the log)."""
    log = _Log()
    counts = im.coco_segmentation_to_rle(segmentation, height, width, NAME, log)
    mask = None if counts is None else im.decode_rles([counts], height, width)[0, ..., 0] // 255
    return mask, log


def _runs(mask):
    """COCO run lengths (column-major, starting with a run of zeros), by numpy."""
    flat = np.asarray(mask, np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(edges).tolist()
    return runs if flat[0] == 0 else [0] + runs


def _pycocotools(polygons, height=H, width=W):
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)))


def _rectangle(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


# === Good segmentations ===

def test_polygons_are_rasterised_in_pixel_edge_coordinates_and_merged():
    mask, log = _mask([_rectangle(3, 2, 9, 7), _rectangle(20, 10, 30, 35)])
    expected = np.zeros((H, W), np.uint8)
    expected[2:7, 3:9] = 1
    expected[10:35, 20:30] = 1
    np.testing.assert_array_equal(mask, expected)
    assert log.records == []


def test_rle_compressed_and_uncompressed_give_the_generators_masks():
    example = bs.generate_example(0, "validation", 64)
    for truth in example["masks"]:
        runs = _runs(truth)
        assert sum(runs) == truth.size
        mask, log = _mask({"size": [64, 64], "counts": runs}, 64, 64)
        np.testing.assert_array_equal(mask, truth)
        compressed = mask_utils.encode(np.asfortranarray(truth))
        mask, log2 = _mask({"size": [64, 64], "counts": compressed["counts"].decode()}, 64, 64)
        np.testing.assert_array_equal(mask, truth)
        assert log.records == log2.records == []
        # The pure-Python reader of compressed strings sees the same runs as numpy.
        assert im._rle_string_counts(compressed["counts"]) == runs


def test_png_masks_decode_to_0_or_255_whatever_their_values():
    truth = bs.generate_example(1, "validation", 64)["masks"]
    encoded = [im.encode_png_mask(m) for m in truth]
    assert all(np.array_equal(np.asarray(Image.open(io.BytesIO(e))), m) for e, m in zip(encoded, truth))  # 0/1
    buffer = io.BytesIO()
    Image.fromarray(truth[0] * 255).save(buffer, format="png")
    masks, kept = im.decode_png_masks([*encoded, buffer.getvalue()], 64, 64, [f"m{k}" for k in range(9)], _Log())
    assert kept.all() and masks.shape == (len(truth) + 1, 64, 64, 1) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[..., 0], np.concatenate([truth, truth[:1]]) * 255)


# === Bad polygons: repaired ===

def test_short_odd_and_non_finite_polygons_are_left_out_and_the_rest_kept():
    good = _rectangle(3, 2, 9, 7)
    mask, log = _mask([[1, 1, 5, 5], good, [1, 2, 3, 4, 5, 6, 7], [1, 1, float("nan"), 3, 4, 4], ["x"] * 6])
    np.testing.assert_array_equal(mask, _pycocotools([good]))
    assert log.kinds() == ["bad_polygon"] * 4
    assert [item for _, item, _ in log.records] == [f"{NAME} polygon {k}" for k in (0, 2, 3, 4)]
    assert "4 coordinates" in log.records[0][2] and "7 coordinates" in log.records[1][2]
    assert "non-finite" in log.records[2][2]


def test_self_intersecting_polygons_are_kept_filled_even_odd():
    bow_tie = [1, 1, 30, 30, 30, 1, 1, 30]
    angles = np.pi / 2 + np.arange(5) * 4 * np.pi / 5                      # a pentagram, drawn in one stroke
    star = np.stack([40 + 15 * np.cos(angles), 20 - 15 * np.sin(angles)], axis=1).ravel().tolist()
    mask, log = _mask([bow_tie, star])
    np.testing.assert_array_equal(mask, _pycocotools([bow_tie, star]))
    assert mask[15, 5] == mask[15, 25] == 1 and mask[5, 15] == 0   # the bow tie's wings are full, above the waist empty
    assert mask[20, 40] == 0 and mask[8, 40] == 1       # even-odd: the pentagram's centre is a hole
    assert log.kinds() == ["self_intersecting"] * 2
    assert log.records[1][1] == f"{NAME} polygon 1" and "even-odd" in log.records[1][2]
    # Simple polygons, convex or not, are not flagged.
    _, log = _mask([_rectangle(3, 2, 9, 7), [0, 0, 20, 0, 20, 20, 10, 5, 0, 20]])
    assert log.records == []


@pytest.mark.parametrize("count", [40, 700])   # one block of the pairwise edge test, and several
def test_self_intersection_is_found_in_long_polygons(count):
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
    circle = np.stack([20 + 15 * np.cos(angles), 20 + 15 * np.sin(angles)], axis=1)
    assert not im._self_intersects(circle)
    crossed = circle.copy()
    crossed[[3, count // 2]] = crossed[[count // 2, 3]]   # two far vertices swapped: their edges now cross
    assert im._self_intersects(crossed)
    folded = circle.copy()
    folded[count - 5:] = folded[count - 5:][::-1]        # the last few vertices reversed: a fold near vertex 0
    assert im._self_intersects(folded)


def test_polygons_past_the_image_are_clipped_as_pycocotools_rasterises_them():
    past = [-10, -5, 70, 10, 50, 50, 5, 30]
    mask, log = _mask([past, _rectangle(3, 2, 9, 7)])
    np.testing.assert_array_equal(mask, _pycocotools([past, _rectangle(3, 2, 9, 7)]))
    assert log.records == [("mask_clipped", NAME, f"polygon 0 reaches past the {H}x{W} px image; clipped to it")]


def test_far_away_vertices_are_cut_before_rasterising():
    # 1e9 px would make pycocotools allocate for the whole perimeter; 50 image sizes away it still can, for the
    # golden mask. The cut at one image size away moves edges by under a pixel.
    for far in (50 * W, 1e9):
        polygon = [5, 5, 30, 8, far, far / 3, 10, 35]
        mask, log = _mask([polygon])
        reference = _pycocotools([[5, 5, 30, 8, 50 * W, 50 * W / 3, 10, 35]])
        assert np.sum(mask != reference) <= 0.01 * reference.sum(), far
        assert log.kinds() == ["mask_clipped"]


# === Bad segmentations: the annotation is dropped ===

@pytest.mark.parametrize("segmentation, fragment", [
    (None, "segmentation is none, not polygons or RLE"),
    ([], "segmentation is none, not polygons or RLE"),
    ([1, 2, 3, 4, 5, 6], "segmentation is a list of another form"),
    ([[1, 2, 3, 4]], "no usable polygon"),
    ([_rectangle(100, 100, 120, 120)], f"the mask has no pixel inside the {H}x{W} px image"),
    ([[5, 5, 30, 5, 60, 5]], "the mask has no pixel inside"),                          # collinear: no area
    ({"size": [H, W + 1], "counts": [H * (W + 1)]}, f"RLE size [{H}, {W + 1}] is not the image's [{H}, {W}]"),
    ({"size": "40x60", "counts": [H * W]}, "RLE size '40x60' is not [height, width]"),
    ({"size": [H, W], "counts": [10, 20]}, f"RLE runs add up to 30 pixels with 0 negative, not the image's {H * W}"),
    ({"size": [H, W], "counts": [H * W + 5, -5]}, "with 1 negative"),
    ({"size": [H, W], "counts": "0\x7f\x01"}, "RLE counts is not a compressed RLE string"),
    ({"size": [H, W], "counts": "PP"}, "RLE counts is not a compressed RLE string"),      # ends mid-number
    ({"size": [H, W], "counts": "a1"}, "RLE runs add up to"),
    ({"size": [H, W], "counts": {"a": 1}}, "RLE counts is neither a string nor a list of integers"),
    ({"size": [H, W], "counts": [H * W]}, "the mask has no pixel inside"),              # all background
])
def test_unusable_segmentations_are_dropped_with_one_line(segmentation, fragment):
    mask, log = _mask(segmentation)
    assert mask is None
    assert log.kinds()[-1] == "bad_mask" and log.records[-1][1] == NAME
    message = log.records[-1][2]
    assert fragment in message and message.endswith("; dropped") and "\n" not in message


def test_bad_png_masks_are_dropped_and_named():
    truth = bs.generate_example(2, "validation", 64)["masks"][0]
    encoded = [im.encode_png_mask(truth), b"\x89PNG broken", im.encode_png_mask(truth[:32]),
               im.encode_png_mask(np.zeros_like(truth)), im.encode_png_mask(truth)]
    log = _Log()
    masks, kept = im.decode_png_masks(encoded, 64, 64, [f"record 3 box {k}" for k in range(5)], log)
    assert kept.tolist() == [True, False, False, False, True] and len(masks) == 2
    np.testing.assert_array_equal(masks[1, ..., 0], truth * 255)
    assert [(kind, item) for kind, item, _ in log.records] == [("bad_mask", f"record 3 box {k}") for k in (1, 2, 3)]
    assert "cannot decode the mask" in log.records[0][2]
    assert "the mask is 32x64, not the image's 64x64" in log.records[1][2]
    assert "the mask is empty" in log.records[2][2]
