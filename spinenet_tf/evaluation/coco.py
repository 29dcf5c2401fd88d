"""COCO box (and mask) metrics with pycocotools, from detections and the ground truth the eval pipeline carries.

The ground truth is rebuilt from each batch's labels (`DetectionInput.eval_fn`: original-pixel boxes, classes,
crowd flags, image ids), so every data source is evaluated the same way, with no annotation file needed. Boxes of
the model input are mapped back to the original image with `image_info` (Model Garden's layout). With masks
(Mask R-CNN), ground-truth and predicted box-frame masks are pasted into the original image
(`mask_ops.paste_masks`) and RLE-encoded, and COCOeval runs a second time with iouType "segm"; crowd
ground truth is kept as in COCO (a detection matched to it is ignored).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import tensorflow as tf
from absl import logging
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from spinenet_tf.detection import box_ops, mask_ops

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def encode_masks(masks: np.ndarray) -> list[dict]:
    """`[G, H, W]` binary masks -> COCO RLEs (counts as str, JSON-ready)."""
    encoded = mask_utils.encode(np.asfortranarray(np.asarray(masks, np.uint8).transpose(1, 2, 0)))
    for rle in encoded:
        rle["counts"] = rle["counts"].decode("ascii")
    return encoded


class COCOEvaluator:
    """Accumulates batches, then `result()` runs COCOeval (bbox; and segm with `include_masks`) and returns
    {metric: value}; mask metrics are named "mask_AP", "mask_AP50", ...

    Args:
        include_masks: Also evaluate masks: the labels carry `gt_masks` (`eval_fn` with `include_masks`) and the
            detections `masks` `[B, D, S, S]` probabilities in each box's frame (`MaskRCNN`), binarised at
            `mask_threshold` when pasted. The ground truth's area is then its mask's, as in COCO's annotations.

    Example:
        evaluator = COCOEvaluator()
        for images, labels in eval_dataset:
            evaluator.update(model.detect(images), labels)
        metrics = evaluator.result()       # {"AP": ..., "AP50": ..., ...}
    """

    def __init__(self, include_masks: bool = False, mask_threshold: float = 0.5):
        self.include_masks = include_masks
        self.mask_threshold = mask_threshold
        self.reset()

    def reset(self) -> None:
        self._images: list[dict] = []
        self._annotations: list[dict] = []
        self._detections: list[dict] = []
        self._categories: set[int] = set()
        self._next_id = 1

    def update(self, detections: dict, labels: dict) -> None:
        """Adds one batch: `detections` from `RetinaNet.detect` / `MaskRCNN`, `labels` from
        `DetectionInput.eval_fn`."""
        detections = {k: np.asarray(v) for k, v in detections.items()}
        labels = {k: np.asarray(v) for k, v in labels.items()}
        if self.include_masks and ("gt_masks" not in labels or "masks" not in detections):
            raise ValueError("COCOEvaluator(include_masks=True) needs labels['gt_masks'] (eval_fn with include_masks) "
                             "and detections['masks']")
        for b in range(len(labels["image_id"])):
            image_id = int(labels["image_id"][b])
            if image_id < 0:
                image_id = 1_000_000_000 + len(self._images)  # sources without ids get unique ones
            info = labels["image_info"][b]
            height, width = info[0]
            self._images.append({"id": image_id, "height": float(height), "width": float(width)})
            crowd = labels.get("gt_is_crowd", np.zeros_like(labels["gt_classes"]))[b]
            real = np.flatnonzero(labels["gt_classes"][b] >= 0)
            gt_boxes = labels["gt_boxes"][b][real]
            gt_rles = (self._rles(labels["gt_masks"][b][real], gt_boxes, height, width, 0.5)
                       if self.include_masks else [None] * len(real))
            for box, cls, is_crowd, rle in zip(gt_boxes, labels["gt_classes"][b][real], crowd[real], gt_rles):
                ymin, xmin, ymax, xmax = (float(v) for v in box)
                annotation = {"id": self._next_id, "image_id": image_id, "category_id": int(cls),
                              "bbox": [xmin, ymin, xmax - xmin, ymax - ymin], "area": (xmax - xmin) * (ymax - ymin),
                              "iscrowd": int(is_crowd)}
                if rle is not None:
                    annotation.update(segmentation=rle, area=float(mask_utils.area(rle)))
                self._annotations.append(annotation)
                self._categories.add(int(cls))
                self._next_id += 1
            count = int(detections["num_detections"][b])
            boxes = box_ops.to_original_pixels(detections["boxes"][b, :count], info)
            boxes = np.clip(boxes, 0.0, [height, width, height, width])
            rles = (self._rles(detections["masks"][b, :count], boxes, height, width, self.mask_threshold)
                    if self.include_masks else [None] * count)
            for box, score, cls, rle in zip(boxes, detections["scores"][b, :count],
                                            detections["classes"][b, :count], rles):
                ymin, xmin, ymax, xmax = (float(v) for v in box)
                detection = {"image_id": image_id, "category_id": int(cls), "score": float(score),
                             "bbox": [xmin, ymin, xmax - xmin, ymax - ymin]}
                if rle is not None:
                    detection["segmentation"] = rle
                self._detections.append(detection)
                self._categories.add(int(cls))

    @staticmethod
    def _rles(masks, boxes, height, width, threshold: float) -> list[dict]:
        if not len(boxes):
            return []
        return encode_masks(mask_ops.paste_masks(masks, boxes, int(round(height)), int(round(width)), threshold))

    def result(self) -> dict[str, float]:
        """COCO AP/AR over everything added (box, then mask metrics); zeros if there are no detections."""
        if not self._images:
            raise ValueError("COCOEvaluator.result(): no images were added")
        logging.info("computing COCO %s metrics: %d images, %d detections ...",
                     "box and mask" if self.include_masks else "box", len(self._images), len(self._detections))
        ground_truth = COCO()
        ground_truth.dataset = {"images": self._images, "annotations": self._annotations,
                                "categories": [{"id": c} for c in sorted(self._categories)]}
        with contextlib.redirect_stdout(io.StringIO()):
            ground_truth.createIndex()
            iou_types = {"bbox": "", "segm": "mask_"} if self.include_masks else {"bbox": ""}
            if not self._detections:
                return {prefix + name: 0.0 for prefix in iou_types.values() for name in METRIC_NAMES}
            metrics = {}
            for iou_type, prefix in iou_types.items():
                # loadRes derives each result's area and (for segm) its bbox from the field it reads: a fresh
                # copy per type keeps the box evaluation on the predicted boxes.
                detections = [{k: v for k, v in d.items() if k != ("bbox" if iou_type == "segm" else "segmentation")}
                              for d in self._detections]
                evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), iou_type)
                evaluation.evaluate()
                evaluation.accumulate()
                evaluation.summarize()
                metrics.update({prefix + name: float(value) for name, value in zip(METRIC_NAMES, evaluation.stats)})
        return metrics


def evaluate(model, dataset) -> dict[str, float]:
    """COCO metrics of a `RetinaNet` on a batched `DetectionInput.eval_fn` dataset of (images, labels)."""
    evaluator = COCOEvaluator()
    detect = tf.function(model.detect)
    for images, labels in dataset:
        evaluator.update(detect(images), labels)
    return evaluator.result()
