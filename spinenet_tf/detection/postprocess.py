"""RetinaNet inference post-processing: decode, score threshold, pre-NMS top-k, NMS. TensorFlow ops only.

Mirrors Model Garden's `MultilevelDetectionGenerator` with `nms_version='v2'` (the RetinaNet eval default,
`official/vision/configs/retinanet.py`), `official/vision/modeling/layers/detection_generator.py` in tf-models-official 2.20.0:
1. sigmoid scores and decoded boxes (`box_coder.decode_boxes`, MG's `box_ops.decode_boxes`) for every anchor,
   boxes clipped to the image;
2. pre-NMS top-k **per class over all levels together** (v2's `_select_top_k_scores`; only MG's v3 works level by
   level), scores > `score_threshold` kept;
3. per-class NMS keeping at most `max_detections` per class, then the best `max_detections` over all classes
   (or, with `class_agnostic=True`, one NMS over each anchor's best class, v2's class-agnostic path).

RetinaNet: Lin et al., arXiv:1708.02002. Runs under `tf.function` (fixed or unknown batch) and exports to SavedModel.
Per-class NMS uses `tf.image.combined_non_max_suppression` (one fast CPU kernel rather than MG's per-class tiled
loop; the same selections, see `non_max_suppression`), which TFLite runs only as a Select TF op. Decoding and the
class-agnostic path convert to TFLite builtins; for on-device per-class NMS export the raw outputs and use the
`TFLite_Detection_PostProcess` op (`official/vision/modeling/layers/detection_generator.py`; anchors via `box_coder.boxes_to_center_size`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from spinenet_tf.detection import anchors as anchors_lib
from spinenet_tf.detection import box_coder


def _flatten_outputs(cls_outputs, box_outputs, anchors) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Accepts per-level dicts (head outputs, `generate_anchors`) or flat tensors; returns flat tensors."""
    if isinstance(box_outputs, Mapping):
        first = box_outputs[min(box_outputs, key=int)]
        anchors_per_location = first.shape[-1] // 4
        num_classes = cls_outputs[min(cls_outputs, key=int)].shape[-1] // anchors_per_location
        box_outputs = anchors_lib.flatten_levels(box_outputs, 4)
        cls_outputs = anchors_lib.flatten_levels(cls_outputs, num_classes)
    if isinstance(anchors, Mapping):
        anchors = anchors_lib.concat_anchors(anchors)
    box_coder.check_boxes(box_outputs, "box_outputs")
    box_coder.check_boxes(anchors, "anchors")
    if cls_outputs.shape.rank != 3:
        raise ValueError(f"cls_outputs must be [B, N, num_classes] or a per-level dict, got {cls_outputs.shape}")
    return cls_outputs, box_outputs, anchors


def decode_predictions(cls_outputs: tf.Tensor | Mapping[int, tf.Tensor],
                       box_outputs: tf.Tensor | Mapping[int, tf.Tensor],
                       anchors: tf.Tensor | Mapping[int, tf.Tensor], image_shape=None,
                       box_coder_weights: Sequence[float] | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Turns head outputs into per-anchor boxes and class probabilities (no thresholding, no NMS).

    Args:
        cls_outputs: Logits `[B, N, C]`, or the head's `{level: [B, H, W, A * C]}`.
        box_outputs: Codes `[B, N, 4]`, or `{level: [B, H, W, A * 4]}`.
        anchors: `[N, 4]` or `{level: [N_l, 4]}` in input pixels.
        image_shape: Optional (H, W) or a `[B, 2]` tensor to clip the boxes to; None leaves them unclipped.
        box_coder_weights: The weights the box targets were encoded with (MG RetinaNet: None).

    Returns:
        (boxes float32 `[B, N, 4]` `[ymin, xmin, ymax, xmax]` in input pixels, scores float32 `[B, N, C]` sigmoid).
    """
    cls_outputs, box_outputs, anchors = _flatten_outputs(cls_outputs, box_outputs, anchors)
    boxes = box_coder.decode_boxes(tf.cast(box_outputs, tf.float32), tf.cast(anchors, tf.float32)[None],
                                   box_coder_weights)
    if image_shape is not None:
        boxes = box_coder.clip_boxes(boxes, image_shape)
    return boxes, tf.sigmoid(tf.cast(cls_outputs, tf.float32))


def non_max_suppression(boxes: tf.Tensor, scores: tf.Tensor, *, score_threshold: float = 0.05,
                        pre_nms_top_k: int = 5000, iou_threshold: float = 0.5, max_detections: int = 100,
                        class_agnostic: bool = False) -> dict[str, tf.Tensor]:
    """Selects detections from decoded boxes `[B, N, 4]` and probabilities `[B, N, C]` (MG v2 semantics).

    Scores must be strictly above `score_threshold`; a box is suppressed by a better one of the same class (any
    class when `class_agnostic`) when their IoU is >= `iou_threshold`, as MG's padded NMS. `boxes` may also be
    class-specific, `[B, N, C, 4]` (Mask R-CNN's second stage; not with `class_agnostic`).

    Returns:
        `boxes` float32 `[B, K, 4]`, `scores` float32 `[B, K]` (descending), `classes` int32 `[B, K]` (index into
        the score channels), `num_detections` int32 `[B]`; K = max_detections and rows past `num_detections` are 0.
    """
    box_coder.check_boxes(boxes)
    if scores.shape[1] is not None:
        top_k = min(scores.shape[1], pre_nms_top_k)
    else:
        top_k = tf.minimum(tf.shape(scores)[1], pre_nms_top_k)
    if class_agnostic:
        if boxes.shape.rank == 4:
            raise ValueError(f"class_agnostic NMS needs shared boxes [B, N, 4], got class-specific {boxes.shape}")
        return _class_agnostic_nms(boxes, scores, top_k, score_threshold, iou_threshold, max_detections)
    top_scores, indices = tf.math.top_k(tf.transpose(scores, [0, 2, 1]), k=top_k)  # [B, C, k]
    if boxes.shape.rank == 4:  # class-specific boxes [B, N, C, 4]
        top_boxes = tf.gather(tf.transpose(boxes, [0, 2, 1, 3]), indices, batch_dims=2)  # [B, C, k, 4]
    else:
        top_boxes = tf.gather(boxes, indices, batch_dims=1)  # [B, C, k, 4]
    # MG's NMS suppresses at IoU >= threshold, the combined NMS kernel at IoU > threshold (both in float32):
    # the largest float32 below the threshold makes `>` mean `>=`.
    kernel_iou_threshold = float(np.nextafter(np.float32(iou_threshold), np.float32(-np.inf)))
    nmsed = tf.image.combined_non_max_suppression(
        tf.transpose(top_boxes, [0, 2, 1, 3]), tf.transpose(top_scores, [0, 2, 1]),
        max_output_size_per_class=max_detections, max_total_size=max_detections,
        iou_threshold=kernel_iou_threshold, score_threshold=score_threshold, clip_boxes=False)
    return {"boxes": nmsed.nmsed_boxes, "scores": nmsed.nmsed_scores,
            "classes": tf.cast(nmsed.nmsed_classes, tf.int32), "num_detections": nmsed.valid_detections}


def _class_agnostic_nms(boxes, scores, top_k, score_threshold, iou_threshold, max_detections):
    best_scores = tf.reduce_max(scores, axis=-1)
    best_classes = tf.argmax(scores, axis=-1, output_type=tf.int32)
    top_scores, indices = tf.math.top_k(best_scores, k=top_k)
    top_boxes = tf.gather(boxes, indices, batch_dims=1)
    top_classes = tf.gather(best_classes, indices, batch_dims=1)
    selected, num_detections = tf.image.non_max_suppression_padded(
        top_boxes, top_scores, max_detections, iou_threshold=iou_threshold, score_threshold=score_threshold,
        pad_to_max_output_size=True, sorted_input=True)
    keep = tf.range(max_detections)[None, :] < num_detections[:, None]
    return {"boxes": tf.where(keep[..., None], tf.gather(top_boxes, selected, batch_dims=1), 0.0),
            "scores": tf.where(keep, tf.gather(top_scores, selected, batch_dims=1), 0.0),
            "classes": tf.where(keep, tf.gather(top_classes, selected, batch_dims=1), 0),
            "num_detections": tf.cast(num_detections, tf.int32)}


def generate_detections(cls_outputs: tf.Tensor | Mapping[int, tf.Tensor],
                        box_outputs: tf.Tensor | Mapping[int, tf.Tensor],
                        anchors: tf.Tensor | Mapping[int, tf.Tensor], image_shape=None, *,
                        score_threshold: float = 0.05, pre_nms_top_k: int = 5000, iou_threshold: float = 0.5,
                        max_detections: int = 100, class_agnostic: bool = False, skip_class_zero: bool = False,
                        box_coder_weights: Sequence[float] | None = None) -> dict[str, tf.Tensor]:
    """RetinaNet detections from head outputs: `decode_predictions` then `non_max_suppression`.

    Args:
        cls_outputs, box_outputs, anchors, image_shape, box_coder_weights: As in `decode_predictions`.
        score_threshold, pre_nms_top_k, iou_threshold, max_detections: MG RetinaNet eval defaults
            (0.05, 5000 per class, 0.5, 100).
        class_agnostic: One NMS over all classes (each anchor keeps its best class) instead of one per class.
        skip_class_zero: Drop score channel 0 before selection and keep returning channel indices (1..C-1), as
            MG's detection generator does for COCO's 91-channel heads (channel 0 is never a positive).

    Returns:
        `boxes` `[B, K, 4]` (`[ymin, xmin, ymax, xmax]` in input pixels), `scores` `[B, K]`, `classes` int32
        `[B, K]` (score-channel index), `num_detections` int32 `[B]`; K = max_detections, padded with zeros.

    Example:
        detections = generate_detections(head_cls, head_box, anchors, image_shape=(640, 640))
    """
    boxes, scores = decode_predictions(cls_outputs, box_outputs, anchors, image_shape, box_coder_weights)
    if skip_class_zero:
        scores = scores[..., 1:]
    detections = non_max_suppression(boxes, scores, score_threshold=score_threshold, pre_nms_top_k=pre_nms_top_k,
                                     iou_threshold=iou_threshold, max_detections=max_detections,
                                     class_agnostic=class_agnostic)
    if skip_class_zero:
        valid = tf.range(max_detections)[None, :] < detections["num_detections"][:, None]
        detections["classes"] = tf.where(valid, detections["classes"] + 1, 0)
    return detections
