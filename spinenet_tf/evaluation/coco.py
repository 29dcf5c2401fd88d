"""COCO box metrics with pycocotools, from detections and the ground truth the eval pipeline carries.

The ground truth is rebuilt from each batch's labels (`DetectionInput.eval_fn`: original-pixel boxes, classes,
crowd flags, image ids), so every data source is evaluated the same way, with no annotation file needed. Boxes of
the model input are mapped back to the original image with `image_info` (Model Garden's layout).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from spinenet_tf.data import detection_input

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class COCOEvaluator:
    """Accumulates batches, then `result()` runs COCOeval (bbox) and returns {metric: value}.

    Example:
        evaluator = COCOEvaluator()
        for images, labels in eval_dataset:
            evaluator.update(model.detect(images), labels)
        metrics = evaluator.result()       # {"AP": ..., "AP50": ..., ...}
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._images: list[dict] = []
        self._annotations: list[dict] = []
        self._detections: list[dict] = []
        self._categories: set[int] = set()
        self._next_id = 1

    def update(self, detections: dict, labels: dict) -> None:
        """Adds one batch: `detections` from `RetinaNet.detect`, `labels` from `DetectionInput.eval_fn`."""
        detections = {k: np.asarray(v) for k, v in detections.items()}
        labels = {k: np.asarray(v) for k, v in labels.items()}
        for b in range(len(labels["image_id"])):
            image_id = int(labels["image_id"][b])
            if image_id < 0:
                image_id = 1_000_000_000 + len(self._images)  # sources without ids get unique ones
            info = labels["image_info"][b]
            height, width = info[0]
            self._images.append({"id": image_id, "height": float(height), "width": float(width)})
            crowd = labels.get("gt_is_crowd", np.zeros_like(labels["gt_classes"]))[b]
            for box, cls, is_crowd in zip(labels["gt_boxes"][b], labels["gt_classes"][b], crowd):
                if cls < 0:
                    continue
                ymin, xmin, ymax, xmax = (float(v) for v in box)
                self._annotations.append({
                    "id": self._next_id, "image_id": image_id, "category_id": int(cls),
                    "bbox": [xmin, ymin, xmax - xmin, ymax - ymin], "area": (xmax - xmin) * (ymax - ymin),
                    "iscrowd": int(is_crowd)})
                self._categories.add(int(cls))
                self._next_id += 1
            count = int(detections["num_detections"][b])
            boxes = detection_input.to_original_pixels(detections["boxes"][b, :count], info)
            boxes = np.clip(boxes, 0.0, [height, width, height, width])
            for box, score, cls in zip(boxes, detections["scores"][b, :count], detections["classes"][b, :count]):
                ymin, xmin, ymax, xmax = (float(v) for v in box)
                self._detections.append({"image_id": image_id, "category_id": int(cls), "score": float(score),
                                         "bbox": [xmin, ymin, xmax - xmin, ymax - ymin]})
                self._categories.add(int(cls))

    def result(self) -> dict[str, float]:
        """COCO AP/AR over everything added; zeros if there are no detections."""
        if not self._images:
            raise ValueError("COCOEvaluator.result(): no images were added")
        ground_truth = COCO()
        ground_truth.dataset = {"images": self._images, "annotations": self._annotations,
                                "categories": [{"id": c} for c in sorted(self._categories)]}
        with contextlib.redirect_stdout(io.StringIO()):
            ground_truth.createIndex()
            if not self._detections:
                return {name: 0.0 for name in METRIC_NAMES}
            results = ground_truth.loadRes(self._detections)
            evaluation = COCOeval(ground_truth, results, "bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return {name: float(value) for name, value in zip(METRIC_NAMES, evaluation.stats)}


def evaluate(model, dataset) -> dict[str, float]:
    """COCO metrics of a `RetinaNet` on a batched `DetectionInput.eval_fn` dataset of (images, labels)."""
    evaluator = COCOEvaluator()
    detect = tf.function(model.detect)
    for images, labels in dataset:
        evaluator.update(detect(images), labels)
    return evaluator.result()
