"""Tests of spinenet_tf/litert/evaluate.py's `evaluate` loop (`tflite/evaluate.py --num_images`), with a stand-in
for the interpreter: how many images it runs and reports, and how it reads the NMS op's outputs. Running a real
detector .tflite through it is in tflite_detector_test.py."""

from __future__ import annotations

import numpy as np
import pytest

from spinenet_tf.litert import evaluate as evaluate_lib

SIZE = 64
GT_BOX = [16.0, 8.0, 48.0, 40.0]  # ymin, xmin, ymax, xmax in model-input pixels, the same in every image
NUM_DETECTIONS = 3  # not 1: the old loop counted images with the detection count


class _Detector:
    """Stands in for `interpreter.TFLiteModel` of a detector with the NMS op. Every image gets NUM_DETECTIONS
    detections of class 0: the ground-truth box (score 0.9) and two boxes far from it; the rows past
    num_detections are NaN, as the op leaves them unwritten."""

    outputs = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
    image_size = (SIZE, SIZE)

    def __init__(self):
        self.calls = 0

    def __call__(self, image):
        assert np.shape(image)[-3:] == (SIZE, SIZE, 3)
        self.calls += 1
        boxes = np.full([1, 10, 4], np.nan, np.float32)
        boxes[0, :NUM_DETECTIONS] = np.array([GT_BOX, [0, 0, 4, 4], [60, 60, 64, 64]], np.float32) / SIZE
        scores = np.full([1, 10], np.nan, np.float32)
        scores[0, :NUM_DETECTIONS] = [0.9, 0.5, 0.4]
        classes = np.full([1, 10], np.nan, np.float32)
        classes[0, :NUM_DETECTIONS] = 0
        return {"detection_boxes": boxes, "detection_classes": classes, "detection_scores": scores,
                "num_detections": np.array([NUM_DETECTIONS], np.float32)}


def _dataset(num_images: int):
    """(normalised image [SIZE, SIZE, 3], labels) pairs as `DetectionInput.eval_fn` gives them, unresized."""
    image_info = np.array([[SIZE, SIZE], [SIZE, SIZE], [1.0, 1.0], [0.0, 0.0]], np.float32)
    for i in range(num_images):
        yield np.zeros([SIZE, SIZE, 3], np.float32), {
            "image_id": np.int64(i + 1), "image_info": image_info,
            "gt_boxes": np.array([GT_BOX, [0, 0, 0, 0]], np.float32), "gt_classes": np.array([1, -1], np.int32)}


@pytest.mark.parametrize("max_images, expected", [(None, 5), (2, 2), (4, 4), (9, 5)])
def test_stops_after_max_images_and_reports_the_image_count(max_images, expected):
    model = _Detector()
    metrics = evaluate_lib.evaluate(model, _dataset(5), class_offset=1, max_images=max_images)
    assert model.calls == expected
    assert type(metrics["num_images"]) is int and metrics["num_images"] == expected
    # Every evaluated image's box is found first (the later, lower-scored boxes are the only false positives), and
    # the NaN rows past num_detections are not read.
    assert metrics["AP"] == pytest.approx(1.0)
