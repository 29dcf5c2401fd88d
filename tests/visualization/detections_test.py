"""Tests of `spinenet_tf.visualization.detections`: small images enlarged by a whole factor, boxes on the right
pixels of the enlarged picture, legible labels on a filled background, the score threshold, ground truth in thin
white, and the picture grid."""

import numpy as np
import pytest
from PIL import Image

from spinenet_tf.visualization import detections

BLACK, WHITE = (0, 0, 0), (255, 255, 255)
NAMES = ("zero", "one", "two")


def _picture(boxes, classes, scores, size=64, **kwargs):
    image = np.zeros((size, size, 3), np.uint8)
    return detections.draw_detections(image, np.array(boxes, np.float32), classes, scores, NAMES, **kwargs)


def _rows_of(picture, colour, x, rows):
    """The rows in `rows` where the pixel at column `x` is `colour`."""
    return [y for y in rows if picture.getpixel((x, y)) == colour]


@pytest.mark.parametrize("width, height, factor", [(128, 128, 3), (256, 256, 2), (64, 64, 6), (200, 100, 2),
                                                   (384, 200, 1), (1000, 800, 1)])
def test_upscale_factor_is_the_smallest_whole_factor_reaching_the_minimum_long_side(width, height, factor):
    assert detections.upscale_factor(width, height, 384) == factor


def test_a_box_is_drawn_on_its_border_pixels_of_the_enlarged_picture():
    # 64 px -> x6 = 384 px. Box rows [10, 30), columns [20, 50) -> picture rows 60..179, columns 120..299.
    picture = _picture([[10, 20, 30, 50]], classes=[1], scores=[0.9])
    assert picture.mode == "RGB" and picture.size == (384, 384)
    colour = detections.class_colour(1)
    middle_row, middle_column = 120, 210
    row = [picture.getpixel((x, middle_row)) for x in range(117, 303)]
    assert row[:3] == [BLACK] * 3 and row[3:5] == [colour] * 2 and row[5] == BLACK  # left edge: x = 120, 121
    assert row[-6] == BLACK and row[-5:-3] == [colour] * 2 and row[-3:] == [BLACK] * 3  # right edge: x = 298, 299
    column = [picture.getpixel((middle_column, y)) for y in range(150, 183)]
    assert column[-6] == BLACK and column[-5:-3] == [colour] * 2 and column[-3:] == [BLACK] * 3  # bottom: 178, 179


def test_the_label_is_legible_text_on_a_filled_background_above_the_box():
    picture = _picture([[10, 20, 30, 50]], classes=[1], scores=[0.9])
    colour = detections.class_colour(1)
    label_rows = _rows_of(picture, colour, 120, range(0, 60))
    assert label_rows and label_rows[-1] == 59, "the label background ends just above the box's top edge (row 60)"
    assert len(label_rows) >= detections.LABEL_FONT_SIZE, f"label only {len(label_rows)} px high"
    band = np.asarray(picture)[label_rows[0]:60, 120:300]
    text = band.min(axis=-1) > 200  # white (anti-aliased) text on this darker class colour
    assert text.sum() > 50, "no text drawn on the label"
    text_columns = np.flatnonzero(text.any(axis=0))
    assert text_columns[-1] - text_columns[0] > 50, "'one 0.90' at 16 px is wider than 50 px"
    assert not np.any(np.all(band[:, :50] == BLACK, axis=-1)), "the label is filled: no image shows through"
    # Dark text on a light class colour.
    light = _picture([[10, 20, 30, 50]], classes=[5], scores=[0.9])  # (70, 240, 240)
    assert np.sum(np.asarray(light)[label_rows[0]:60, 120:170].max(axis=-1) < 60) > 20  # inside the label


def test_a_box_at_the_top_edge_gets_its_label_inside():
    picture = _picture([[0, 20, 30, 50]], classes=[1], scores=[0.9])  # box rows 0..179, columns 120..299
    text_rows = np.flatnonzero(np.all(np.asarray(picture)[:, 122:298] == WHITE, axis=-1).any(axis=1))
    assert len(text_rows) and text_rows[0] >= 2 and text_rows[-1] < detections.LABEL_FONT_SIZE + 4


def test_only_detections_at_or_above_the_score_threshold_are_drawn():
    boxes = [[10, 10, 20, 20], [40, 40, 50, 50]]
    picture = _picture(boxes, classes=[0, 2], scores=[0.5, 0.49], score_threshold=0.5)
    assert picture.getpixel((60, 90)) == detections.class_colour(0)   # left edge of the 0.5 box
    assert picture.getpixel((240, 270)) == BLACK                       # left edge of the 0.49 box: not drawn
    picture = _picture(boxes, classes=[0, 2], scores=[0.5, 0.49], score_threshold=0.4)
    assert picture.getpixel((240, 270)) == detections.class_colour(2)


def test_ground_truth_is_thin_white_with_its_class_name_below():
    truth = np.array([[5, 5, 25, 40]])  # -> rows 30..149, columns 30..239
    picture = _picture([], classes=[], scores=[], ground_truth=truth)
    assert picture.getpixel((30, 90)) == WHITE and picture.getpixel((31, 90)) == BLACK  # 1 px
    assert picture.getpixel((100, 149)) == WHITE and picture.getpixel((100, 148)) == BLACK
    assert not np.any(np.asarray(picture)[152:170] == 255), "no name without ground_truth_classes"
    named = _picture([], classes=[], scores=[], ground_truth=truth, ground_truth_classes=[2])
    assert np.all(np.asarray(named)[:150] == np.asarray(picture)[:150])
    assert np.sum(np.asarray(named)[150:170, 30:120].min(axis=-1) > 200) > 20, "'two' written under the box"


def test_image_grid_tiles_left_to_right_then_down():
    tiles = [Image.new("RGB", (4, 3), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    grid = detections.image_grid(tiles, columns=2)
    assert grid.size == (8, 6)
    assert [grid.getpixel(xy) for xy in ((0, 0), (4, 0), (0, 3), (4, 3))] == [
        (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    spaced = detections.image_grid(tiles, columns=2, spacing=2)
    assert spaced.size == (10, 8)
    assert [spaced.getpixel(xy) for xy in ((3, 2), (4, 0), (6, 0), (0, 5), (6, 5))] == [
        (255, 0, 0), (255, 255, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
