"""COCOEvaluator(include_masks=True): mask AP (pycocotools segm) from box-frame masks pasted into the original image.

Golden values by hand: a perfect prediction scores AP 1; a prediction with mask IoU 0.64 matches at the thresholds
0.50, 0.55 and 0.60 only, so its AP over 0.50:0.95 is 3/10; a detection of crowd ground truth is ignored.
"""

import numpy as np
import pytest

from spinenet_tf.detection import mask_ops
from spinenet_tf.evaluation.coco import COCOEvaluator, encode_masks

SIZE = 28
HEIGHT, WIDTH = 60, 80


def _disc(size=SIZE):
    yy, xx = np.mgrid[:size, :size] + 0.5
    return ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (size / 2) ** 2).astype(np.float32)


def _labels(boxes, classes, masks, crowd=None, scale=1.0):
    count = 4
    labels = {"image_id": np.array([7]),
              "image_info": np.array([[[HEIGHT, WIDTH], [HEIGHT * scale, WIDTH * scale], [scale, scale], [0, 0]]],
                                     np.float32),
              "gt_boxes": np.zeros((1, count, 4), np.float32), "gt_classes": -np.ones((1, count), np.int32),
              "gt_masks": np.zeros((1, count, SIZE, SIZE), np.float32),
              "gt_is_crowd": np.zeros((1, count), np.int32)}
    labels["gt_boxes"][0, :len(boxes)] = boxes
    labels["gt_classes"][0, :len(classes)] = classes
    labels["gt_masks"][0, :len(masks)] = masks
    if crowd is not None:
        labels["gt_is_crowd"][0, :len(crowd)] = crowd
    return labels


def _detections(boxes, classes, scores, masks):
    k = 5
    out = {"boxes": np.zeros((1, k, 4), np.float32), "scores": np.zeros((1, k), np.float32),
           "classes": np.zeros((1, k), np.int32), "num_detections": np.array([len(boxes)], np.int32),
           "masks": np.zeros((1, k, SIZE, SIZE), np.float32)}
    out["boxes"][0, :len(boxes)] = boxes
    out["scores"][0, :len(boxes)] = scores
    out["classes"][0, :len(boxes)] = classes
    out["masks"][0, :len(boxes)] = masks
    return out


def _evaluate(detections, labels):
    evaluator = COCOEvaluator(include_masks=True)
    evaluator.update(detections, labels)
    return evaluator.result()


def test_perfect_masks_give_mask_ap_one_through_the_resize():
    boxes = np.array([[4, 6, 40, 50], [20, 44, 58, 78]], np.float32)
    masks = [_disc(), np.ones((SIZE, SIZE), np.float32)]
    scale = 0.5  # detections in model-input pixels, half the original
    metrics = _evaluate(_detections(boxes * scale, [1, 2], [0.9, 0.8], masks), _labels(boxes, [1, 2], masks,
                                                                                        scale=scale))
    for name in ("AP", "AP50", "mask_AP", "mask_AP50", "mask_AP75"):
        assert metrics[name] == pytest.approx(1.0), name


def test_mask_iou_064_matches_at_three_of_ten_thresholds():
    # Ground truth: the full 20x25 box (500 px). Prediction: the same box, its mask filling the left 16 of 25
    # columns (320 px): mask IoU 0.64 matches at 0.50, 0.55 and 0.60 only; the box IoU is 1.
    gt_box = [[10, 10, 30, 35]]
    full = np.ones((SIZE, SIZE), np.float32)
    left = mask_ops.crop_masks(np.pad(np.ones((20, 16, 1), np.uint8), [[0, 0], [0, 9], [0, 0]])[None],
                               np.array([[0, 0, 20, 25]], np.float32), SIZE).numpy()[0]
    pasted = mask_ops.paste_masks(left[None], np.array(gt_box, np.float32), HEIGHT, WIDTH)[0]
    assert pasted.sum() == 320 and pasted[10:30, 10:26].all()  # the pasting this golden value relies on
    metrics = _evaluate(_detections(gt_box, [1], [0.9], [left]), _labels(gt_box, [1], [full]))
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["mask_AP50"] == pytest.approx(1.0)
    assert metrics["mask_AP75"] == pytest.approx(0.0)
    assert metrics["mask_AP"] == pytest.approx(0.3)


def test_detection_of_crowd_ground_truth_is_not_a_false_positive():
    boxes = [[5, 5, 25, 25], [30, 40, 58, 78]]
    full = np.ones((SIZE, SIZE), np.float32)
    # The crowd region is detected with the higher score; were it not crowd, it would be a miss plus a hit.
    detections = _detections(boxes[::-1], [1, 1], [0.95, 0.9], [full, full])
    crowd = _evaluate(detections, _labels(boxes, [1, 1], [full, full], crowd=[0, 1]))
    assert crowd["mask_AP"] == pytest.approx(1.0) and crowd["AP"] == pytest.approx(1.0)
    other = np.array([[0, 0, 1, 1]], np.float32)
    plain = _evaluate(_detections(np.concatenate([other, np.array(boxes[:1], np.float32)]), [1, 1], [0.95, 0.9],
                                  [full, full]), _labels(boxes[:1], [1], [full]))
    assert plain["mask_AP"] < 1.0  # control: an unmatched higher-scored detection does cost precision


def test_rle_round_trips_to_the_pasted_mask():
    masks = mask_ops.paste_masks(np.stack([_disc(), _disc()]), np.array([[2, 3, 30, 40], [0, 0, 60, 80]]),
                                 HEIGHT, WIDTH)
    from pycocotools import mask as mask_utils
    rles = encode_masks(masks)
    assert all(isinstance(rle["counts"], str) for rle in rles)
    np.testing.assert_array_equal(mask_utils.decode(rles).transpose(2, 0, 1), masks)


def test_missing_masks_are_a_clear_error():
    boxes = [[4, 6, 40, 50]]
    labels = _labels(boxes, [1], [_disc()])
    detections = _detections(boxes, [1], [0.9], [_disc()])
    del detections["masks"]
    with pytest.raises(ValueError, match="include_masks=True.*detections\\['masks'\\]"):
        COCOEvaluator(include_masks=True).update(detections, labels)
