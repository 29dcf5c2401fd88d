"""Region-of-interest ops of the two-stage detectors: RPN proposals, multi-level RoIAlign, second-stage detections.
TensorFlow ops only (exportable to SavedModel), wrapped in Keras layers for `MaskRCNN`'s functional graph.

Mirror Model Garden (tf-models-official 2.20.0, `official/vision/modeling/layers/`, `official/vision/ops/`):
- `generate_proposals`: `roi_generator._multilevel_propose_rois` with its defaults (no score or size
  pre-filter, padded NMS): per level sigmoid, decode (no weights), clip to the image, top-k, NMS; then the best
  `num_proposals` over all levels.
- `multilevel_roi_align`: `spatial_transform_ops.multilevel_crop_and_resize` (the `MultilevelROIAligner`): each box
  goes to level floor(4 + log2(sqrt(h * w) / 224)) clipped to the pyramid (FPN, Lin et al., arXiv:1612.03144, eq. 1),
  and each of the `S x S` bins takes one bilinear sample at its centre (`sample_offset` 0.5), with MG's clamping of
  samples outside the feature map.
- `generate_detections`: `DetectionGenerator` with `nms_version='v2'`: softmax, background dropped, class-specific
  boxes decoded with weights (10, 10, 5, 5) and clipped, per-class top-k and NMS, the best `max_detections`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from spinenet_tf.detection import anchors as anchors_lib
from spinenet_tf.detection import box_coder, postprocess

# Faster R-CNN's second-stage box-code weights (ty, tx, th, tw), MG's `regression_weights` for the first head.
DETECTION_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# FPN's canonical ImageNet size and level (arXiv:1612.03144, eq. 1): a 224x224 box is pooled from P4.
_CANONICAL_SIZE, _CANONICAL_LEVEL = 224.0, 4


def _padded_nms(boxes: tf.Tensor, scores: tf.Tensor, max_output_size: int, iou_threshold: float):
    """NMS on score-sorted `[B, N, 4]` / `[B, N]`, suppressing at IoU >= threshold (MG's
    `sorted_non_max_suppression_padded`); returns `[B, max_output_size]` boxes and scores, zeros past the valid ones."""
    selected, num_valid = tf.image.non_max_suppression_padded(
        boxes, scores, max_output_size, iou_threshold=iou_threshold, pad_to_max_output_size=True, sorted_input=True,
        canonicalized_coordinates=True)
    keep = tf.range(max_output_size)[None, :] < num_valid[:, None]
    return (tf.where(keep[..., None], tf.gather(boxes, selected, batch_dims=1), 0.0),
            tf.where(keep, tf.gather(scores, selected, batch_dims=1), 0.0))


def generate_proposals(raw_scores: Mapping[int, tf.Tensor], raw_boxes: Mapping[int, tf.Tensor],
                       anchors: Mapping[int, tf.Tensor], image_shape, *, pre_nms_top_k: int = 2000,
                       nms_iou_threshold: float = 0.7, num_proposals: int = 1000) -> tuple[tf.Tensor, tf.Tensor]:
    """RPN outputs -> the best proposals of the image (MG's `MultilevelROIGenerator`).

    Args:
        raw_scores: `{level: [B, H_l, W_l, A]}` objectness logits.
        raw_boxes: `{level: [B, H_l, W_l, A * 4]}` box codes relative to the anchors.
        anchors: `{level: [H_l * W_l * A, 4]}` in input pixels (`anchors.generate_anchors`).
        image_shape: (H, W) or a `[B, 2]` tensor to clip the proposals to.
        pre_nms_top_k: Best boxes kept per level before NMS (MG: 2000 in training, 1000 at test time).
        nms_iou_threshold: Per-level NMS threshold (0.7); 0 skips NMS.
        num_proposals: Boxes kept per level after NMS and in total (1000).

    Returns:
        (rois float32 `[B, K, 4]` `[ymin, xmin, ymax, xmax]` in input pixels, scores float32 `[B, K]` sigmoid, in
        descending order), K = min(num_proposals, sum over levels of min(N_l, num_proposals)); rows past the
        valid proposals are zeros.
    """
    rois, roi_scores = [], []
    for level in sorted(raw_scores, key=int):
        scores = tf.cast(raw_scores[level], tf.float32)
        num_boxes = math.prod(scores.shape[1:])
        scores = tf.sigmoid(tf.reshape(scores, [-1, num_boxes]))
        codes = tf.reshape(tf.cast(raw_boxes[level], tf.float32), [-1, num_boxes, 4])
        boxes = box_coder.clip_boxes(box_coder.decode_boxes(codes, tf.cast(anchors[level], tf.float32)[None]),
                                     image_shape)
        post_nms_top_k = min(num_boxes, num_proposals)
        if nms_iou_threshold > 0.0:
            scores, indices = tf.math.top_k(scores, k=min(num_boxes, pre_nms_top_k))
            boxes, scores = _padded_nms(tf.gather(boxes, indices, batch_dims=1), scores, post_nms_top_k,
                                        nms_iou_threshold)
        else:
            scores, indices = tf.math.top_k(scores, k=post_nms_top_k)
            boxes = tf.gather(boxes, indices, batch_dims=1)
        rois.append(boxes)
        roi_scores.append(scores)
    rois, roi_scores = tf.concat(rois, axis=1), tf.concat(roi_scores, axis=1)
    roi_scores, indices = tf.math.top_k(roi_scores, k=min(roi_scores.shape[1], num_proposals))
    return tf.gather(rois, indices, batch_dims=1), roi_scores


def bilinear_grid(start: tf.Tensor, size: tf.Tensor, bound: tf.Tensor, output_size: int, sample_offset: float):
    """Bilinear sampling along one axis of `[..., K]` boxes: S samples at `start + (i + sample_offset) * size / S`,
    returned as their two neighbours `[..., K, 2S]` (int32, low and high interleaved) and the neighbours' weights
    `[..., K, 2S]`. Neighbours are clamped to [0, bound]; the weights are not (MG's `_compute_grid_positions`)."""
    steps = (tf.range(output_size, dtype=start.dtype) + sample_offset) / output_size
    position = start[..., None] + steps * size[..., None]
    low = tf.minimum(tf.maximum(tf.floor(position), 0.0), bound[..., None])
    high = tf.minimum(low + 1.0, bound[..., None])
    frac = position - low
    indices = tf.reshape(tf.stack([low, high], axis=-1), tf.concat([tf.shape(start), [2 * output_size]], 0))
    weights = tf.reshape(tf.stack([1.0 - frac, frac], axis=-1), tf.shape(indices))
    return tf.cast(indices, tf.int32), weights


def assign_levels(boxes: tf.Tensor, min_level: int, max_level: int) -> tf.Tensor:
    """The pyramid level each `[..., 4]` box is pooled from: floor(4 + log2(sqrt(h * w) / 224)) in
    [min_level, max_level] (FPN eq. 1; zero-size boxes go to min_level). Returns int32 `[...]`."""
    boxes = tf.cast(boxes, tf.float32)
    areas_sqrt = tf.sqrt((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))
    levels = tf.math.floordiv(tf.math.log(tf.math.divide_no_nan(areas_sqrt, _CANONICAL_SIZE)), math.log(2.0))
    # Clip in float: log(0) = -inf would not survive the cast to int32.
    return tf.cast(tf.clip_by_value(levels + _CANONICAL_LEVEL, min_level, max_level), tf.int32)


def multilevel_roi_align(features: Mapping[int, tf.Tensor], boxes: tf.Tensor, output_size: int = 7,
                         sample_offset: float = 0.5) -> tf.Tensor:
    """RoIAlign on a feature pyramid (He et al., arXiv:1703.06870 §3, one sample per bin; MG's
    `multilevel_crop_and_resize`).

    Args:
        features: `{level: [B, H_l, W_l, C]}` with H_l, W_l = input size / 2**level.
        boxes: `[B, K, 4]` `[ymin, xmin, ymax, xmax]` in input pixels.
        output_size: S, the side of the output grid (7 for the box head, 14 for the mask head).
        sample_offset: Position of the sample inside its bin (0.5: the centre).

    Returns:
        `[B, K, S, S, C]` in the features' dtype.
    """
    levels = sorted(features, key=int)
    min_level, max_level = int(levels[0]), int(levels[-1])
    first = features[levels[0]]
    channels = first.shape[-1]
    heights = [features[level].shape[1] for level in levels]
    widths = [features[level].shape[2] for level in levels]
    offsets = np.cumsum([0] + [h * w for h, w in zip(heights, widths)])[:-1]
    batch = tf.shape(first)[0]
    flat = tf.concat([tf.reshape(features[level], [batch, -1, channels]) for level in levels], axis=1)

    boxes = tf.cast(boxes, tf.float32)
    box_levels = assign_levels(boxes, min_level, max_level)
    scale = tf.pow(2.0, tf.cast(box_levels, tf.float32))
    index = box_levels - min_level
    bound_y = tf.gather(tf.constant(heights, tf.float32), index) - 1.0
    bound_x = tf.gather(tf.constant(widths, tf.float32), index) - 1.0
    y, y_weights = bilinear_grid(boxes[..., 0] / scale, (boxes[..., 2] - boxes[..., 0]) / scale, bound_y, output_size,
                         sample_offset)
    x, x_weights = bilinear_grid(boxes[..., 1] / scale, (boxes[..., 3] - boxes[..., 1]) / scale, bound_x, output_size,
                         sample_offset)
    level_offset = tf.gather(tf.constant(offsets, tf.int32), index)
    row_start = level_offset[..., None] + y * tf.gather(tf.constant(widths, tf.int32), index)[..., None]
    gather_index = row_start[..., :, None] + x[..., None, :]  # [B, K, 2S, 2S]
    num_boxes = tf.shape(boxes)[1]
    samples = tf.gather(flat, tf.reshape(gather_index, [batch, -1]), batch_dims=1)
    side = 2 * output_size
    return bilinear_combine(tf.reshape(samples, [batch, num_boxes, side, side, channels]), y_weights, x_weights)


def bilinear_combine(neighbours: tf.Tensor, y_weights: tf.Tensor, x_weights: tf.Tensor) -> tf.Tensor:
    """`[B, K, 2S, 2S, C]` neighbour values at the `bilinear_grid` positions -> `[B, K, S, S, C]` samples.

    Each output sample sums its 2 x 2 weighted neighbours, as a 2 x 2 average pool of the neighbours weighted by 4x
    (MG's `_feature_bilinear_interpolation`). A `reduce_sum` over the two inner axes of a 7-D view gives the same
    values, but it and its broadcast gradient are much slower than the pool (timings in bench/README.md, Mask
    R-CNN section)."""
    batch, num_boxes = tf.shape(neighbours)[0], tf.shape(neighbours)[1]
    side, channels = neighbours.shape[2], neighbours.shape[-1]
    weights = y_weights[..., :, None] * x_weights[..., None, :] * 4.0
    neighbours *= tf.cast(weights[..., None], neighbours.dtype)
    pooled = tf.nn.avg_pool2d(tf.reshape(neighbours, [-1, side, side, channels]), 2, 2, "VALID")
    return tf.reshape(pooled, [batch, num_boxes, side // 2, side // 2, channels])


def generate_detections(class_outputs: tf.Tensor, box_outputs: tf.Tensor, rois: tf.Tensor, image_shape, *,
                        score_threshold: float = 0.05, pre_nms_top_k: int = 5000, iou_threshold: float = 0.5,
                        max_detections: int = 100,
                        box_weights: Sequence[float] = DETECTION_BOX_WEIGHTS) -> dict[str, tf.Tensor]:
    """Second-stage outputs -> final detections (MG's `DetectionGenerator`, v2 NMS, softmax scores).

    Args:
        class_outputs: `[B, K, C]` logits; class 0 is the background and is never detected.
        box_outputs: `[B, K, C * 4]` class-specific codes relative to `rois`, encoded with `box_weights`.
        rois: `[B, K, 4]` the proposals the head scored, in input pixels.
        image_shape: (H, W) or `[B, 2]` to clip the boxes to.
        score_threshold, pre_nms_top_k, iou_threshold, max_detections: MG defaults (0.05, 5000 per class, 0.5,
            100); a box is suppressed by a better one of its class at IoU >= iou_threshold.

    Returns:
        `boxes` float32 `[B, D, 4]`, `scores` `[B, D]` (descending), `classes` int32 `[B, D]` (1..C-1),
        `num_detections` int32 `[B]`; D = max_detections, rows past `num_detections` are zeros.
    """
    class_outputs = tf.cast(class_outputs, tf.float32)
    num_rois, num_classes = class_outputs.shape[1], class_outputs.shape[2]
    scores = tf.nn.softmax(class_outputs, axis=-1)[..., 1:]
    codes = tf.reshape(tf.cast(box_outputs, tf.float32), [-1, num_rois, num_classes, 4])[:, :, 1:]
    boxes = box_coder.decode_boxes(codes, tf.cast(rois, tf.float32)[:, :, None], box_weights)
    if isinstance(image_shape, (list, tuple)):
        boxes = box_coder.clip_boxes(boxes, image_shape)
    else:
        boxes = box_coder.clip_boxes(boxes, tf.cast(image_shape, tf.float32)[:, None, :])
    detections = postprocess.non_max_suppression(boxes, scores, score_threshold=score_threshold,
                                                 pre_nms_top_k=pre_nms_top_k, iou_threshold=iou_threshold,
                                                 max_detections=max_detections)
    valid = tf.range(max_detections)[None, :] < detections["num_detections"][:, None]
    detections["classes"] = tf.where(valid, detections["classes"] + 1, 0)
    return detections


# === Keras layers for the functional graph ===

@keras.saving.register_keras_serializable(package="spinenet_tf")
class ProposalGenerator(keras.layers.Layer):
    """`generate_proposals` for a fixed input size, with MG's train / test settings.

    Args:
        anchors: `{level: [N_l, 4]}` anchors of the input size (kept as constants, not weights); in the config they
            are rebuilt from `anchor_config` (`AnchorGenerator.get_config()`) and `image_size`.
        image_size: (H, W) of the input; proposals are clipped to it.
        pre_nms_top_k, nms_iou_threshold, num_proposals: Training settings (MG: 2000, 0.7, 1000).
        test_pre_nms_top_k, test_nms_iou_threshold, test_num_proposals: Inference settings (MG: 1000, 0.7, 1000).

    Call:
        (scores, boxes) of `RPNHead`, training flag. Returns rois `[B, K, 4]`.
    """

    def __init__(self, anchor_config: dict, image_size: Sequence[int], pre_nms_top_k: int = 2000,
                 nms_iou_threshold: float = 0.7, num_proposals: int = 1000, test_pre_nms_top_k: int = 1000,
                 test_nms_iou_threshold: float = 0.7, test_num_proposals: int = 1000, **kwargs):
        super().__init__(**kwargs)
        if num_proposals != test_num_proposals:
            # The heads after this layer are built for one number of RoIs.
            raise ValueError(f"num_proposals={num_proposals} and test_num_proposals={test_num_proposals} must be "
                             "equal (the second stage has a static number of RoIs)")
        self.anchor_config = dict(anchor_config)
        self.image_size = tuple(int(s) for s in image_size)
        self.train_settings = dict(pre_nms_top_k=pre_nms_top_k, nms_iou_threshold=nms_iou_threshold,
                                   num_proposals=num_proposals)
        self.test_settings = dict(pre_nms_top_k=test_pre_nms_top_k, nms_iou_threshold=test_nms_iou_threshold,
                                  num_proposals=test_num_proposals)
        generated = anchors_lib.AnchorGenerator(**self.anchor_config)(self.image_size)
        self.anchors = {level: a.numpy() for level, a in generated.items()}
        self.num_rois = min(num_proposals, sum(min(len(a), num_proposals) for a in self.anchors.values()))

    def call(self, scores, boxes, training=None):
        settings = self.train_settings if training else self.test_settings
        anchors = {level: tf.constant(a) for level, a in self.anchors.items()}
        return generate_proposals(scores, boxes, anchors, self.image_size, **settings)[0]

    def compute_output_shape(self, scores_shape, boxes_shape):
        return (next(iter(scores_shape.values()))[0], self.num_rois, 4)

    def get_config(self):
        return {**super().get_config(), "anchor_config": self.anchor_config, "image_size": list(self.image_size),
                **self.train_settings, **{f"test_{k}": v for k, v in self.test_settings.items()}}


@keras.saving.register_keras_serializable(package="spinenet_tf")
class RoIAligner(keras.layers.Layer):
    """`multilevel_roi_align` as a layer. Call: (features `{level: [B, H_l, W_l, C]}`, boxes `[B, K, 4]`)."""

    def __init__(self, crop_size: int = 7, sample_offset: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.crop_size = crop_size
        self.sample_offset = sample_offset

    def call(self, features, boxes):
        return multilevel_roi_align(features, boxes, self.crop_size, self.sample_offset)

    def compute_output_shape(self, features_shape, boxes_shape):
        channels = next(iter(features_shape.values()))[-1]
        return (boxes_shape[0], boxes_shape[1], self.crop_size, self.crop_size, channels)

    def get_config(self):
        return {**super().get_config(), "crop_size": self.crop_size, "sample_offset": self.sample_offset}


@keras.saving.register_keras_serializable(package="spinenet_tf")
class DetectionGenerator(keras.layers.Layer):
    """`generate_detections` for a fixed input size. Call: (class_outputs, box_outputs, rois) -> detections dict."""

    def __init__(self, image_size: Sequence[int], score_threshold: float = 0.05, pre_nms_top_k: int = 5000,
                 iou_threshold: float = 0.5, max_detections: int = 100, **kwargs):
        super().__init__(**kwargs)
        self.image_size = tuple(int(s) for s in image_size)
        self.settings = dict(score_threshold=score_threshold, pre_nms_top_k=pre_nms_top_k,
                             iou_threshold=iou_threshold, max_detections=max_detections)

    def call(self, class_outputs, box_outputs, rois):
        return generate_detections(class_outputs, box_outputs, rois, self.image_size, **self.settings)

    def compute_output_spec(self, class_outputs, box_outputs, rois):
        batch, count = class_outputs.shape[0], self.settings["max_detections"]
        return {"boxes": keras.KerasTensor((batch, count, 4)), "scores": keras.KerasTensor((batch, count)),
                "classes": keras.KerasTensor((batch, count), dtype="int32"),
                "num_detections": keras.KerasTensor((batch,), dtype="int32")}

    def get_config(self):
        return {**super().get_config(), "image_size": list(self.image_size), **self.settings}
