"""RetinaNet losses: sigmoid focal loss and Huber box loss, normalised by the number of positive anchors.

Focal loss: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017 (arXiv:1708.02002), eq. 5:
FL(p_t) = -alpha_t (1 - p_t)**gamma log(p_t), summed over anchors and classes.

The numbers equal Model Garden's RetinaNet task (tf-models-official 2.20.0): `official/vision/tasks/retinanet.py::
build_losses` with `official/vision/losses/focal_loss.py::FocalLoss` and `tf_keras.losses.Huber`, both with
`Reduction.SUM` and sample weights divided by (positives in the batch + 1). Defaults are MG's SpineNet recipe
(`official/vision/configs/retinanet.py`): alpha 0.25, gamma 1.5, Huber delta 0.1, box_loss_weight 50. Built from Keras 3 loss functions
(TensorFlow backend), no Model Garden import.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf

from spinenet_tf.detection.box_coder import check_boxes


def sigmoid_focal_loss(labels: tf.Tensor, logits: tf.Tensor, alpha: float = 0.25, gamma: float = 1.5) -> tf.Tensor:
    """Element-wise sigmoid focal loss, same shape as `logits` (no reduction).

    `alpha` weights positives (label 1) and `1 - alpha` negatives; cross-entropy is computed from logits, so it does
    not saturate for confident mistakes.
    """
    labels = tf.cast(labels, tf.float32)
    logits = tf.cast(logits, tf.float32)
    # keras.losses.binary_focal_crossentropy is exactly MG's FocalLoss term (it recovers the logits behind its own
    # sigmoid, so no 1e-7 clipping), but it averages over `axis`; a trailing size-1 axis makes that mean the
    # identity. The loss *classes* (BinaryFocalCrossentropy, Huber) are not used: their reductions are per batch
    # element, while RetinaNet sums over everything and divides by the positive count.
    return keras.losses.binary_focal_crossentropy(labels[..., None], logits[..., None], apply_class_balancing=True,
                                                  alpha=alpha, gamma=gamma, from_logits=True)


def retinanet_loss(targets: Mapping[str, tf.Tensor], cls_outputs: tf.Tensor, box_outputs: tf.Tensor, *,
                   focal_alpha: float = 0.25, focal_gamma: float = 1.5, huber_delta: float = 0.1,
                   box_loss_weight: float = 50.0) -> dict[str, tf.Tensor]:
    """RetinaNet classification and box losses of a batch.

    cls_loss = sum over non-ignored anchors and all classes of the focal loss / (num_positives + 1);
    box_loss = sum over positive anchors of the Huber loss averaged over (ty, tx, th, tw) / (num_positives + 1);
    loss = cls_loss + box_loss_weight * box_loss. num_positives counts the whole batch (per replica, as MG).

    Args:
        targets: `assign_targets` output for the batch: `cls_targets` int `[B, A]` (-1 = background),
            `box_targets` `[B, A, 4]`, `positive` and `ignore` bool `[B, A]`.
        cls_outputs: Class logits `[B, A, num_classes]` in the anchor layout (`anchors.flatten_levels`).
        box_outputs: Box regression `[B, A, 4]`, (ty, tx, th, tw).
        focal_alpha, focal_gamma: Focal loss parameters (MG SpineNet: 0.25, 1.5; the paper's best: 0.25, 2.0).
        huber_delta: Huber loss delta (MG: 0.1).
        box_loss_weight: Weight of the box loss in `loss` (MG: 50).

    Returns:
        `{"loss", "cls_loss", "box_loss"}` scalars (float32).

    Raises:
        ValueError: If box tensors do not end in 4, cls_outputs is not `[B, A, num_classes]`, or the anchor
            counts differ.
    """
    check_boxes(box_outputs, "box_outputs")
    check_boxes(targets["box_targets"], "targets['box_targets']")
    if cls_outputs.shape.rank != 3:
        raise ValueError(f"cls_outputs must be flat [B, A, num_classes] logits (see anchors.flatten_levels), "
                         f"got shape {cls_outputs.shape}")
    num_anchors = {"cls_outputs": cls_outputs.shape[1], "box_outputs": box_outputs.shape[-2],
                   "targets['box_targets']": targets["box_targets"].shape[-2]}
    if len({n for n in num_anchors.values() if n is not None}) > 1:
        raise ValueError(f"anchor counts differ: {num_anchors}")
    num_classes = cls_outputs.shape[-1]
    positive = tf.cast(targets["positive"], tf.float32)
    not_ignored = 1.0 - tf.cast(targets["ignore"], tf.float32)
    normalizer = tf.reduce_sum(positive) + 1.0  # + 1 keeps images without positives finite (MG)

    labels = tf.one_hot(tf.where(targets["positive"], tf.cast(targets["cls_targets"], tf.int32), -1), num_classes)
    focal = sigmoid_focal_loss(labels, cls_outputs, focal_alpha, focal_gamma)
    cls_loss = tf.reduce_sum(focal * not_ignored[..., None]) / normalizer

    # keras.losses.huber averages over the last axis, exactly as the tf_keras Huber MG uses.
    huber = keras.losses.huber(tf.cast(targets["box_targets"], tf.float32), tf.cast(box_outputs, tf.float32),
                               delta=huber_delta)
    box_loss = tf.reduce_sum(huber * positive) / normalizer
    return {"loss": cls_loss + box_loss_weight * box_loss, "cls_loss": cls_loss, "box_loss": box_loss}
