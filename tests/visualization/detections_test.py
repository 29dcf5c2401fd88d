"""Tests of `spinenet_tf.visualization.detections`: boxes drawn by class colour above the score threshold, ground
truth in white, and the picture grid."""

import numpy as np
from PIL import Image

from spinenet_tf.visualization import detections


def test_draws_detections_above_the_threshold_and_the_ground_truth():
    image = np.zeros((64, 64, 3), np.uint8)
    boxes = np.array([[10, 10, 40, 40], [20, 44, 50, 60]], np.float32)  # (ymin, xmin, ymax, xmax)
    picture = detections.draw_detections(image, boxes, classes=[1, 2], scores=[0.9, 0.1], class_names=["a", "b", "c"],
                                         ground_truth=np.array([[2, 2, 60, 60]]))
    assert picture.mode == "RGB" and picture.size == (64, 64)
    colours = detections._DETECTION_COLOURS
    assert picture.getpixel((25, 40)) == colours[1]  # bottom edge of the class-1 box, below its label
    assert picture.getpixel((44, 35)) == (0, 0, 0)  # the 0.1 box is under min_score: not drawn
    assert picture.getpixel((2, 30)) == (255, 255, 255)  # ground truth: thin white


def test_image_grid_tiles_left_to_right_then_down():
    tiles = [Image.new("RGB", (4, 3), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    grid = detections.image_grid(tiles, columns=2)
    assert grid.size == (8, 6)
    assert [grid.getpixel(xy) for xy in ((0, 0), (4, 0), (0, 3), (4, 3))] == [
        (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
