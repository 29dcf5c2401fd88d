"""Faster R-CNN box coder and box utilities, in TensorFlow ops only (no Keras, exportable).

The coding is Faster R-CNN's (Ren et al., NeurIPS 2015, arXiv:1506.01497), used by RetinaNet (arXiv:1708.02002):

    ty = (y - ya) / ha,   tx = (x - xa) / wa,   th = log(h / ha),   tw = log(w / wa)

with (y, x, h, w) the box centre and size and (ya, xa, ha, wa) the anchor's. It mirrors Model Garden's
`official/vision/ops/box_ops.py::encode_boxes / decode_boxes` (tf-models-official 2.20.0) operation for operation:
1e-8 is added to every height and width before dividing, optional `weights` multiply (ty, tx, th, tw) on encode and
divide them on decode (MG's RetinaNet default: none), and decode clips th, tw to log(1000 / 16) before `exp`.

The coded order (ty, tx, th, tw) is also what TFLite's `TFLite_Detection_PostProcess` kernel decodes (with its
y/x/h/w scales = the weights, 1.0 for none), except that the kernel does not clip th, tw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

EPSILON = 1e-8
# Largest th / tw decoded: a box at most 1000/16 times its anchor (Detectron's BBOX_XFORM_CLIP, kept by MG).
BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)


def check_boxes(boxes: tf.Tensor, name: str = "boxes") -> None:
    """Raises ValueError unless the static last dimension of `boxes` is 4 ([ymin, xmin, ymax, xmax] or codes)."""
    shape = tf.TensorShape(boxes.shape)
    if shape.rank == 0 or (shape.rank is not None and shape[-1] != 4):
        raise ValueError(f"{name} must have a last dimension of 4 ([ymin, xmin, ymax, xmax] or (ty, tx, th, tw)), "
                         f"got shape {boxes.shape}")


def _check_weights(weights: Sequence[float] | None) -> None:
    if weights is not None and (len(weights) != 4 or any(w <= 0 for w in weights)):
        raise ValueError(f"weights must be None or 4 positive numbers for (ty, tx, th, tw), got {weights}")


def encode_boxes(boxes: tf.Tensor, anchors: tf.Tensor, weights: Sequence[float] | None = None) -> tf.Tensor:
    """Encodes boxes relative to anchors as (ty, tx, th, tw).

    Args:
        boxes: `[..., 4]` boxes `[ymin, xmin, ymax, xmax]` in pixels.
        anchors: Anchors of the same or a broadcastable shape, same format.
        weights: Optional scale factors multiplying (ty, tx, th, tw), e.g. Faster R-CNN's [10, 10, 5, 5].

    Returns:
        `[..., 4]` codes in the dtype of `anchors`. A box equal to its anchor encodes to (0, 0, 0, 0).
    """
    boxes, anchors = tf.convert_to_tensor(boxes), tf.convert_to_tensor(anchors)
    check_boxes(boxes, "boxes")
    check_boxes(anchors, "anchors")
    _check_weights(weights)
    boxes = tf.cast(boxes, anchors.dtype)
    ymin, xmin, ymax, xmax = tf.split(boxes, 4, axis=-1)
    box_h, box_w = ymax - ymin, xmax - xmin
    box_yc, box_xc = ymin + 0.5 * box_h, xmin + 0.5 * box_w
    a_ymin, a_xmin, a_ymax, a_xmax = tf.split(anchors, 4, axis=-1)
    anchor_h, anchor_w = a_ymax - a_ymin, a_xmax - a_xmin
    anchor_yc, anchor_xc = a_ymin + 0.5 * anchor_h, a_xmin + 0.5 * anchor_w
    # The epsilon keeps log() finite for degenerate (zero-size) boxes.
    anchor_h += EPSILON
    anchor_w += EPSILON
    box_h += EPSILON
    box_w += EPSILON
    codes = [(box_yc - anchor_yc) / anchor_h, (box_xc - anchor_xc) / anchor_w,
             tf.math.log(box_h / anchor_h), tf.math.log(box_w / anchor_w)]
    if weights is not None:
        codes = [code * weight for code, weight in zip(codes, weights)]
    return tf.concat(codes, axis=-1)


def decode_boxes(codes: tf.Tensor, anchors: tf.Tensor, weights: Sequence[float] | None = None) -> tf.Tensor:
    """Decodes (ty, tx, th, tw) relative to anchors back to `[ymin, xmin, ymax, xmax]`.

    Args:
        codes: `[..., 4]` box regression outputs.
        anchors: Anchors of the same or a broadcastable shape, `[ymin, xmin, ymax, xmax]` in pixels.
        weights: The scale factors used to encode (codes are divided by them), or None.

    Returns:
        `[..., 4]` boxes in pixels, in the dtype of `anchors`. th and tw are clipped to `BBOX_XFORM_CLIP` first,
        so the round trip is exact only for boxes at most 62.5x their anchor.
    """
    codes, anchors = tf.convert_to_tensor(codes), tf.convert_to_tensor(anchors)
    check_boxes(codes, "codes")
    check_boxes(anchors, "anchors")
    _check_weights(weights)
    codes = tf.cast(codes, anchors.dtype)
    dy, dx, dh, dw = tf.split(codes, 4, axis=-1)
    if weights is not None:
        dy, dx, dh, dw = dy / weights[0], dx / weights[1], dh / weights[2], dw / weights[3]
    dh = tf.minimum(dh, BBOX_XFORM_CLIP)
    dw = tf.minimum(dw, BBOX_XFORM_CLIP)
    a_ymin, a_xmin, a_ymax, a_xmax = tf.split(anchors, 4, axis=-1)
    anchor_h, anchor_w = a_ymax - a_ymin, a_xmax - a_xmin
    anchor_yc, anchor_xc = a_ymin + 0.5 * anchor_h, a_xmin + 0.5 * anchor_w
    yc, xc = dy * anchor_h + anchor_yc, dx * anchor_w + anchor_xc
    h, w = tf.exp(dh) * anchor_h, tf.exp(dw) * anchor_w
    ymin, xmin = yc - 0.5 * h, xc - 0.5 * w
    return tf.concat([ymin, xmin, ymin + h, xmin + w], axis=-1)


def clip_boxes(boxes: tf.Tensor, image_shape) -> tf.Tensor:
    """Clips `[..., 4]` boxes to [0, H] x [0, W].

    Args:
        boxes: `[ymin, xmin, ymax, xmax]` in pixels.
        image_shape: (H, W) as Python numbers, or a tensor `[2]` / `[B, 2]` broadcastable against `boxes[..., :2]`
            after inserting the anchor axis (a `[B, 2]` tensor clips `[B, N, 4]` boxes per image).
    """
    boxes = tf.convert_to_tensor(boxes)
    check_boxes(boxes)
    if isinstance(image_shape, (list, tuple)):
        height, width = image_shape
        limits = tf.constant([height, width, height, width], boxes.dtype)
    else:
        image_shape = tf.cast(image_shape, boxes.dtype)
        if image_shape.shape.rank == 2:  # [B, 2] against [B, N, 4]
            image_shape = image_shape[:, None, :]
        limits = tf.concat([image_shape, image_shape], axis=-1)
    return tf.maximum(tf.minimum(boxes, limits), 0.0)


def boxes_to_center_size(boxes: tf.Tensor) -> tf.Tensor:
    """`[ymin, xmin, ymax, xmax]` -> `[ycenter, xcenter, height, width]`, the anchor format of TFLite's
    `TFLite_Detection_PostProcess` op (`tensorflow/lite/kernels/detection_postprocess.cc`)."""
    boxes = tf.convert_to_tensor(boxes)
    check_boxes(boxes)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return tf.stack([(ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin], axis=-1)
