"""Mask R-CNN losses (He et al., arXiv:1703.06870 §3; Faster R-CNN, arXiv:1506.01497 §3.1.2). TensorFlow ops only.

Mirror Model Garden's `official/vision/losses/maskrcnn_losses.py` (tf-models-official 2.20.0) number for number:
- RPN objectness: sigmoid cross-entropy summed over the sampled anchors (label 1 or 0; -1 is ignored), divided by
  batch * rpn_batch_size_per_im (256).
- RPN box: Huber (delta 1/9) summed over anchors with a non-zero target, divided per level by 4 x their count + 0.01
  (MG normalises each level on its own and adds the levels).
- Fast R-CNN class: softmax cross-entropy averaged over every sampled RoI.
- Fast R-CNN box: Huber (delta 1) on the target class's box of foreground RoIs, divided by 4 x their count + 0.01.
- Mask: sigmoid cross-entropy summed over the 28x28 pixels of foreground masks, divided by their pixel count + 0.01.
Normalisers are averaged over replicas (`ReplicaContext.all_reduce`), as in Model Garden.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from spinenet_tf.detection import box_coder
from spinenet_tf.detection.maskrcnn import roi_ops


def _huber(x: tf.Tensor, delta: float) -> tf.Tensor:
    abs_x = tf.abs(x)
    return tf.where(abs_x <= delta, 0.5 * tf.square(x), delta * (abs_x - 0.5 * delta))


def _replica_mean(value: tf.Tensor) -> tf.Tensor:
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, value)


def rpn_score_loss(score_outputs: tf.Tensor, score_targets: tf.Tensor, rpn_batch_size_per_im: int = 256
                   ) -> tf.Tensor:
    """Objectness loss. `score_outputs` `[B, N]` logits, `score_targets` `[B, N]` int (1, 0, or -1 = ignored)."""
    score_outputs = tf.cast(score_outputs, tf.float32)
    score_targets = tf.cast(score_targets, tf.float32)
    mask = tf.cast(score_targets >= 0, tf.float32)
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.maximum(score_targets, 0.0), logits=score_outputs)
    batch = tf.cast(tf.shape(score_outputs)[0], tf.float32)
    return tf.reduce_sum(losses * mask) / (batch * rpn_batch_size_per_im)


def rpn_box_loss(box_outputs: Mapping[int, tf.Tensor], box_targets: Mapping[int, tf.Tensor],
                 huber_delta: float = 1.0 / 9.0) -> tf.Tensor:
    """RPN box loss over `{level: [B, H_l, W_l, A * 4]}` outputs and targets (zero targets = no positive)."""
    total = 0.0
    for level in sorted(box_outputs, key=int):
        outputs = tf.reshape(tf.cast(box_outputs[level], tf.float32), [-1, 4])
        targets = tf.reshape(tf.cast(box_targets[level], tf.float32), [-1, 4])
        valid = tf.cast(tf.reduce_any(tf.abs(targets) > 1e-6, axis=-1, keepdims=True), tf.float32)
        valid = tf.broadcast_to(valid, tf.shape(targets))
        loss = tf.reduce_sum(_huber(targets - outputs, huber_delta) * valid)
        total += loss / (_replica_mean(tf.reduce_sum(valid)) + 0.01)
    return total


def fast_rcnn_box_targets(matched_gt_boxes: tf.Tensor, rois: tf.Tensor, matched_gt_classes: tf.Tensor,
                          weights: Sequence[float] = roi_ops.DETECTION_BOX_WEIGHTS) -> tf.Tensor:
    """`[B, K, 4]` codes of each RoI's matched box (weights 10, 10, 5, 5), zeros for background RoIs."""
    codes = box_coder.encode_boxes(matched_gt_boxes, tf.cast(rois, tf.float32), weights)
    return tf.where((matched_gt_classes > 0)[..., None], codes, 0.0)


def fast_rcnn_class_loss(class_outputs: tf.Tensor, class_targets: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy of `[B, K, C]` logits against `[B, K]` classes (0 = background), mean over RoIs."""
    class_outputs = tf.cast(class_outputs, tf.float32)
    labels = tf.one_hot(tf.cast(class_targets, tf.int32), class_outputs.shape[-1])
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=class_outputs))


def fast_rcnn_box_loss(box_outputs: tf.Tensor, class_targets: tf.Tensor, box_targets: tf.Tensor,
                       huber_delta: float = 1.0) -> tf.Tensor:
    """Huber loss of the target class's box (`[B, K, C * 4]` outputs) on foreground RoIs."""
    box_outputs = tf.cast(box_outputs, tf.float32)
    num_rois, num_classes = box_outputs.shape[1], box_outputs.shape[2] // 4
    class_targets = tf.cast(class_targets, tf.int32)
    per_class = tf.reshape(box_outputs, [-1, num_rois, num_classes, 4])
    outputs = tf.gather(per_class, class_targets, axis=2, batch_dims=2)
    mask = tf.broadcast_to(tf.cast(class_targets > 0, tf.float32)[..., None], tf.shape(outputs))
    loss = tf.reduce_sum(_huber(tf.cast(box_targets, tf.float32) - outputs, huber_delta) * mask)
    return loss / (_replica_mean(tf.reduce_sum(mask)) + 0.01)


def mask_loss(mask_outputs: tf.Tensor, mask_targets: tf.Tensor, mask_classes: tf.Tensor) -> tf.Tensor:
    """Per-pixel sigmoid cross-entropy of `[B, M, S, S]` logits (the RoI's class) on foreground RoIs."""
    mask_outputs = tf.cast(mask_outputs, tf.float32)
    weights = tf.broadcast_to(tf.cast(mask_classes > 0, tf.float32)[:, :, None, None], tf.shape(mask_outputs))
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(mask_targets, tf.float32), logits=mask_outputs)
    return tf.reduce_sum(losses * weights) / (_replica_mean(tf.reduce_sum(weights)) + 0.01)
