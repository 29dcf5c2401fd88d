"""COCOEvaluator: perfect detections score AP 1, misses and mislocalisation lower it as COCO defines."""

import numpy as np
import pytest

from spinenet_tf.evaluation.coco import COCOEvaluator


def _labels(boxes, classes, scale=1.0):
    count = 4
    gt_boxes = np.zeros((1, count, 4), np.float32)
    gt_classes = -np.ones((1, count), np.int32)
    gt_boxes[0, :len(boxes)] = boxes
    gt_classes[0, :len(classes)] = classes
    info = np.array([[[200, 300], [200 * scale, 300 * scale], [scale, scale], [0, 0]]], np.float32)
    return {"image_id": np.array([3]), "image_info": info, "gt_boxes": gt_boxes, "gt_classes": gt_classes}


def _detections(boxes, classes, scores):
    k = 5
    out = {"boxes": np.zeros((1, k, 4), np.float32), "scores": np.zeros((1, k), np.float32),
           "classes": np.zeros((1, k), np.int32), "num_detections": np.array([len(boxes)], np.int32)}
    out["boxes"][0, :len(boxes)] = boxes
    out["scores"][0, :len(boxes)] = scores
    out["classes"][0, :len(boxes)] = classes
    return out


GT = [[10, 20, 110, 140], [50, 150, 150, 290]]


def test_perfect_detections_give_ap_one_even_through_the_resize():
    evaluator = COCOEvaluator()
    scale = 0.5  # model input is half the original: detections come in model pixels
    evaluator.update(_detections(np.array(GT) * scale, [1, 2], [0.9, 0.8]), _labels(GT, [1, 2], scale))
    metrics = evaluator.result()
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AP50"] == pytest.approx(1.0)


def test_wrong_class_and_missed_box_cost_what_coco_says():
    evaluator = COCOEvaluator()
    # One of two categories found perfectly, the other detected with the wrong class: category 2 has AP 0, and
    # category 1 (found) AP 1; class 3 has no ground truth and does not count in the mean. AP = (1 + 0) / 2.
    evaluator.update(_detections(GT, [1, 3], [0.9, 0.8]), _labels(GT, [1, 2]))
    assert evaluator.result()["AP"] == pytest.approx(0.5)


def test_loosely_placed_box_passes_at_iou_half_only():
    evaluator = COCOEvaluator()
    # Shifted by 32 px in x on a 100 x 120 box: IoU = 88 * 100 / (2 * 12000 - 8800) = 0.579 -> a match at IoU
    # thresholds 0.50 and 0.55 only: AP50 = 1, AP75 = 0, AP (mean over 0.50:0.95, 10 thresholds) = 0.2.
    shifted = [[10, 52, 110, 172]]
    evaluator.update(_detections(shifted, [1], [0.9]), _labels(GT[:1], [1]))
    metrics = evaluator.result()
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(0.0)
    assert metrics["AP"] == pytest.approx(0.2)


def test_no_images_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        COCOEvaluator().result()
