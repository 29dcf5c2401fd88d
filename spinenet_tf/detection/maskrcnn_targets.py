"""Mask R-CNN training targets (He et al., arXiv:1703.06870 §3): mask targets cropped from the instance masks.
TensorFlow ops only.

Mirrors Model Garden (tf-models-official 2.20.0): `official/vision/modeling/layers/mask_sampler.py`
(`_sample_and_crop_foreground_masks`) and `official/vision/ops/spatial_transform_ops.py::crop_mask_in_target_box`.
The data pipeline stores each instance mask cropped to its ground-truth box and resized to a square `M x M`
(MG's parser: `mask_crop_size` 112); a mask target is that mask resampled inside the sampled RoI, so a RoI larger
than its box sees zeros around the instance.
"""

from __future__ import annotations

import tensorflow as tf

from spinenet_tf.detection import roi_ops

_EPSILON = 1e-8
_PAD = 2  # zeros around each mask, so samples just outside the box read 0 (MG pads 2)


def crop_masks_in_boxes(masks: tf.Tensor, mask_boxes: tf.Tensor, target_boxes: tf.Tensor, output_size: int,
                        sample_offset: float = 0.5) -> tf.Tensor:
    """Resamples box-aligned masks inside target boxes (MG's `crop_mask_in_target_box`).

    Args:
        masks: `[B, K, M, M]` masks, each covering its `mask_boxes` row exactly.
        mask_boxes: `[B, K, 4]` `[ymin, xmin, ymax, xmax]` in pixels of the image the boxes live in.
        target_boxes: `[B, K, 4]` the boxes to crop (the sampled RoIs), same pixels.
        output_size: S, the side of the result (28: the mask head's output).
        sample_offset: Position of each sample in its cell (0.5: the centre, as MG's mask sampler).

    Returns:
        float32 `[B, K, S, S]`, bilinear samples of the zero-padded masks.
    """
    masks = tf.cast(masks, tf.float32)
    mask_boxes, target_boxes = tf.cast(mask_boxes, tf.float32), tf.cast(target_boxes, tf.float32)
    height, width = masks.shape[2], masks.shape[3]
    if height != width:
        # MG scales y and x by each other's size (its x transform uses the height); the two agree only for squares.
        raise ValueError(f"masks must be square (the parser's M x M crops), got {height}x{width}")
    batch, num_masks = tf.shape(masks)[0], tf.shape(masks)[1]
    padded = tf.pad(masks, [[0, 0], [0, 0], [_PAD, _PAD], [_PAD, _PAD]])
    side = height + 2 * _PAD
    gt_ymin, gt_xmin, gt_ymax, gt_xmax = tf.unstack(mask_boxes, axis=-1)
    ymin, xmin, ymax, xmax = tf.unstack(target_boxes, axis=-1)
    # The target box in the padded mask's pixels.
    scale_y = height / (gt_ymax - gt_ymin + _EPSILON)
    scale_x = width / (gt_xmax - gt_xmin + _EPSILON)
    bound = tf.fill(tf.shape(ymin), float(side - 1))
    y, y_weights = roi_ops.bilinear_grid((ymin - gt_ymin) * scale_y + _PAD, (ymax - ymin) * scale_y, bound,
                                         output_size, sample_offset)
    x, x_weights = roi_ops.bilinear_grid((xmin - gt_xmin) * scale_x + _PAD, (xmax - xmin) * scale_x, bound,
                                         output_size, sample_offset)
    index = y[..., :, None] * side + x[..., None, :]  # [B, K, 2S, 2S] into each mask's flat pixels
    flat = tf.reshape(padded, [batch, num_masks, side * side])
    neighbours = tf.gather(flat, tf.reshape(index, [batch, num_masks, -1]), batch_dims=2)
    neighbours = tf.reshape(neighbours, [batch, num_masks, 2 * output_size, 2 * output_size, 1])
    return roi_ops.bilinear_combine(neighbours, y_weights, x_weights)[..., 0]


def sample_mask_targets(rois: tf.Tensor, matched_gt_boxes: tf.Tensor, matched_gt_classes: tf.Tensor,
                        matched_gt_indices: tf.Tensor, gt_masks: tf.Tensor, num_sampled_masks: int = 128,
                        mask_target_size: int = 28) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Picks the foreground RoIs of the box-head sample and crops their mask targets (MG's `MaskSampler`).

    Args:
        rois: `[B, N, 4]` the RoIs sampled for the box head.
        matched_gt_boxes: `[B, N, 4]` each RoI's matched ground-truth box.
        matched_gt_classes: `[B, N]` its class, 0 for background RoIs.
        matched_gt_indices: `[B, N]` the index of its ground truth in `gt_masks` (-1 for background).
        gt_masks: `[B, G, M, M]` instance masks, each cropped to its ground-truth box (see the module docstring).
        num_sampled_masks: RoIs kept per image (128): the foreground ones first, in RoI order, then background
            ones to fill (their targets are not used by the loss, which weights by class > 0).
        mask_target_size: Side of the targets (28).

    Returns:
        (rois `[B, K, 4]`, classes `[B, K]`, mask targets float32 `[B, K, S, S]` in [0, 1]), K = num_sampled_masks.
    """
    # top_k of a 0/1 foreground flag keeps the first indices among equals: foreground in RoI order first.
    _, picked = tf.math.top_k(tf.cast(matched_gt_classes > 0, tf.int32), k=num_sampled_masks)
    rois = tf.gather(rois, picked, batch_dims=1)
    boxes = tf.gather(matched_gt_boxes, picked, batch_dims=1)
    classes = tf.gather(matched_gt_classes, picked, batch_dims=1)
    gt_indices = tf.maximum(tf.gather(matched_gt_indices, picked, batch_dims=1), 0)
    masks = tf.gather(gt_masks, gt_indices, batch_dims=1)
    return rois, classes, crop_masks_in_boxes(masks, boxes, rois, mask_target_size)
