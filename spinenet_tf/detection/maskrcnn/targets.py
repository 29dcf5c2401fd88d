"""Mask R-CNN training targets (He et al., arXiv:1703.06870 §3): RPN anchor labels, RoI sampling for the box head
and mask targets cropped from the instance masks. TensorFlow ops only.

Mirrors Model Garden (tf-models-official 2.20.0): `official/vision/ops/anchor.py::RpnAnchorLabeler`,
`official/vision/modeling/layers/roi_sampler.py::ROISampler`, `mask_sampler.py::_sample_and_crop_foreground_masks`
and `official/vision/ops/spatial_transform_ops.py::crop_mask_in_target_box`. The random sub-samples (RPN anchors,
RoIs) draw their own noise with MG's quotas, so they match MG in law, not draw for draw; a `seed` makes them
reproducible.
The data pipeline stores each instance mask cropped to its ground-truth box and resized to a square `M x M`
(MG's parser: `mask_crop_size` 112); a mask target is that mask resampled inside the sampled RoI, so a RoI larger
than its box sees zeros around the instance.
"""

from __future__ import annotations

import tensorflow as tf

from spinenet_tf.detection import mask_ops, matcher
from spinenet_tf.detection import targets as targets_lib

_EPSILON = 1e-8
_PAD = 2  # zeros around each mask, so samples just outside the box read 0 (MG pads 2)


def crop_masks_in_boxes(masks: tf.Tensor, mask_boxes: tf.Tensor, target_boxes: tf.Tensor, output_size: int,
                        sample_offset: float = 0.5) -> tf.Tensor:
    """Resamples box-aligned masks inside target boxes (MG's `crop_mask_in_target_box`).

    MG samples the zero-padded masks with unclamped bilinear weights (as `roi_ops.bilinear_grid`); on
    two pixels of zero padding those samples are `mask_ops.bilinear_sample`'s clamped ones (both read zeros
    there), so this samples the padded masks with it.

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
    side = height + 2 * _PAD
    padded = tf.reshape(tf.pad(masks, [[0, 0], [0, 0], [_PAD, _PAD], [_PAD, _PAD]]), [-1, side, side])
    gt_ymin, gt_xmin, gt_ymax, gt_xmax = tf.unstack(mask_boxes, axis=-1)
    ymin, xmin, ymax, xmax = tf.unstack(target_boxes, axis=-1)
    # The target box in the padded mask's pixels (MG's convention: mask pixel k at coordinate k).
    scale_y = height / (gt_ymax - gt_ymin + _EPSILON)
    scale_x = width / (gt_xmax - gt_xmin + _EPSILON)
    rows = mask_ops.cell_centres((ymin - gt_ymin) * scale_y + _PAD, (ymax - ymin) * scale_y, output_size,
                                 sample_offset)
    cols = mask_ops.cell_centres((xmin - gt_xmin) * scale_x + _PAD, (xmax - xmin) * scale_x, output_size,
                                 sample_offset)
    sampled = mask_ops.bilinear_sample(padded, tf.reshape(rows, [-1, output_size]),
                                       tf.reshape(cols, [-1, output_size]))
    return tf.reshape(sampled, [batch, num_masks, output_size, output_size])


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


def match_rois(rois: tf.Tensor, gt_boxes: tf.Tensor, gt_classes: tf.Tensor, *, foreground_iou_threshold: float = 0.5,
               background_iou_high_threshold: float = 0.5, background_iou_low_threshold: float = 0.0,
               mix_gt_boxes: bool = True) -> dict[str, tf.Tensor]:
    """Matches proposals to ground truth for the box head (MG's `ROISampler` before sub-sampling).

    Each RoI takes its best-IoU ground-truth box: foreground at IoU >= foreground_iou_threshold, background in
    [background_iou_low_threshold, background_iou_high_threshold), ignored in between (and below the low bound).
    No forced matches: with `mix_gt_boxes` the ground-truth boxes join the RoIs and match themselves.

    Args:
        rois: `[B, N, 4]` proposals in input pixels.
        gt_boxes: `[B, G, 4]`, padded with -1 (or any negative box).
        gt_classes: `[B, G]` int, padded with -1; 0 is the background and must not be a ground-truth class.
        foreground_iou_threshold, background_iou_high_threshold, background_iou_low_threshold: MG's 0.5, 0.5, 0.0.
        mix_gt_boxes: Append the ground-truth boxes to the RoIs (MG: True in training).

    Returns:
        `rois` `[B, N', 4]` (N' = N + G with `mix_gt_boxes`), `matched_gt_boxes` `[B, N', 4]` (zeros for
        background), `matched_gt_classes` int32 `[B, N']` (0 for background), `matched_gt_indices` int32 `[B, N']`
        (-1 for background), `foreground` / `background` bool `[B, N']` (neither: ignored).
    """
    rois = tf.cast(rois, tf.float32)
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    if mix_gt_boxes:
        rois = tf.concat([rois, gt_boxes], axis=1)
    valid = tf.logical_and(tf.reduce_max(gt_boxes, axis=-1) >= 0.0, gt_classes >= 0)
    iou = matcher.iou_matrix(rois, gt_boxes)
    best_iou = tf.reduce_max(tf.where(valid[:, None, :], iou, -1.0), axis=-1)
    indices, labels = matcher.match(iou, positive_threshold=foreground_iou_threshold,
                                    negative_threshold=background_iou_high_threshold,
                                    allow_low_quality_matches=False, valid=valid)
    # Padded RoIs (negative coordinates, e.g. the mixed-in padding of gt_boxes) are background, never sampled.
    roi_valid = tf.reduce_max(rois, axis=-1) >= 0.0
    foreground = tf.logical_and(labels == matcher.POSITIVE, roi_valid)
    background = tf.logical_and(tf.logical_and(labels == matcher.NEGATIVE, best_iou >= background_iou_low_threshold),
                                roi_valid)
    boxes = tf.where(foreground[..., None], tf.gather(gt_boxes, indices, batch_dims=1), 0.0)
    classes = tf.where(foreground, tf.gather(tf.cast(gt_classes, tf.int32), indices, batch_dims=1), 0)
    return {"rois": rois, "matched_gt_boxes": boxes, "matched_gt_classes": classes,
            "matched_gt_indices": tf.where(foreground, indices, -1), "foreground": foreground,
            "background": background}


def sample_rois(rois: tf.Tensor, gt_boxes: tf.Tensor, gt_classes: tf.Tensor, *, num_sampled_rois: int = 512,
                foreground_fraction: float = 0.25, seed: tf.Tensor | None = None, **match_settings
                ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """`match_rois`, then a random sample of `num_sampled_rois` per image: at most
    `int(num_sampled_rois * foreground_fraction)` foreground RoIs, background RoIs for the rest (MG's `ROISampler`
    with its `BoxSampler`); when an image has too few, ignored RoIs fill the sample as background-labelled rows.

    Args:
        rois, gt_boxes, gt_classes, **match_settings: As in `match_rois`.
        num_sampled_rois, foreground_fraction: MG's 512 and 0.25.
        seed: A `[2]` int seed for `tf.random.stateless_uniform`, so a data-parallel step is reproducible; None
            draws from the global generator.

    Returns:
        (rois `[B, K, 4]`, matched_gt_boxes `[B, K, 4]`, matched_gt_classes `[B, K]`, matched_gt_indices `[B, K]`),
        K = num_sampled_rois, foreground rows first.
    """
    matched = match_rois(rois, gt_boxes, gt_classes, **match_settings)
    noise = _noise(tf.shape(matched["foreground"]), seed)
    kept_foreground, kept_background = _subsample(matched["foreground"], matched["background"], noise,
                                                  num_sampled_rois, foreground_fraction)
    # The kept foreground first, then the kept background, then (if too few) any other RoIs.
    priority = noise + tf.where(kept_foreground, 2.0, tf.where(kept_background, 1.0, 0.0))
    _, picked = tf.math.top_k(priority, k=num_sampled_rois)
    # Excess foreground RoIs that only fill the sample count as background, as in MG.
    labels_kept = tf.gather(kept_foreground, picked, batch_dims=1)
    boxes = tf.where(labels_kept[..., None], tf.gather(matched["matched_gt_boxes"], picked, batch_dims=1), 0.0)
    classes = tf.where(labels_kept, tf.gather(matched["matched_gt_classes"], picked, batch_dims=1), 0)
    indices = tf.where(labels_kept, tf.gather(matched["matched_gt_indices"], picked, batch_dims=1), -1)
    return tf.gather(matched["rois"], picked, batch_dims=1), boxes, classes, indices


def _noise(shape, seed: tf.Tensor | None) -> tf.Tensor:
    return tf.random.uniform(shape) if seed is None else tf.random.stateless_uniform(shape, seed)


def _first_by_noise(candidates: tf.Tensor, noise: tf.Tensor, count, max_count: int) -> tf.Tensor:
    """The `count` (per row, at most `max_count`) candidates of highest noise, ties to the lower index: a uniform
    random subset without replacement of the `[B, N]` mask `candidates`.

    One `top_k` of `max_count` and a scatter, not a rank from two full argsorts (same subset: the sort's order is
    `top_k`'s), since full argsorts over every anchor are a measurable part of a train step (bench/README.md)."""
    scores = tf.where(candidates, noise, -1.0)
    size = scores.shape[-1]  # static where known: XLA needs a constant k
    _, order = tf.math.top_k(scores, k=min(max_count, size) if size is not None else
                             tf.minimum(max_count, tf.shape(scores)[-1]))
    within = tf.broadcast_to(tf.range(tf.shape(order)[-1])[None, :] < count, tf.shape(order))
    rows = tf.broadcast_to(tf.range(tf.shape(order)[0])[:, None], tf.shape(order))
    picked = tf.scatter_nd(tf.stack([rows, order], axis=-1), tf.cast(within, tf.int32), tf.shape(scores))
    return tf.logical_and(candidates, picked > 0)


def _subsample(positive: tf.Tensor, negative: tf.Tensor, noise: tf.Tensor, num_samples: int,
               positive_fraction: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Random positives, at most `int(num_samples * positive_fraction)`, and negatives for the rest of
    `num_samples` (MG's `BalancedPositiveNegativeSampler`, is_static=False). Returns the kept masks `[B, N]`."""
    max_positive = int(num_samples * positive_fraction)
    kept_positive = _first_by_noise(positive, noise, max_positive, max_positive)
    num_negative = num_samples - tf.reduce_sum(tf.cast(kept_positive, tf.int32), axis=-1, keepdims=True)
    return kept_positive, _first_by_noise(negative, noise, num_negative, num_samples)


def rpn_targets(anchors: tf.Tensor, gt_boxes: tf.Tensor, gt_classes: tf.Tensor, *, match_threshold: float = 0.7,
                unmatched_threshold: float = 0.3, rpn_batch_size_per_im: int = 256, rpn_fg_fraction: float = 0.5,
                seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    """RPN anchor labels and box targets (MG's `RpnAnchorLabeler`, Faster R-CNN §3.1.2).

    An anchor is positive at IoU >= match_threshold with a ground-truth box (and each box's best anchor is), negative
    below unmatched_threshold; then `rpn_batch_size_per_im` anchors are sampled, at most half of them positive.

    Args:
        anchors: `[A, 4]` flat anchors (or `{level: [A_l, 4]}`).
        gt_boxes, gt_classes: `[B, G, 4]` / `[B, G]` padded ground truth (see `targets.valid_ground_truth`).
        match_threshold, unmatched_threshold, rpn_batch_size_per_im, rpn_fg_fraction: MG's 0.7, 0.3, 256, 0.5.
        seed: A `[2]` int seed for a reproducible sample; None uses the global generator.

    Returns:
        `score_targets` int32 `[B, A]`: 1 sampled positive, 0 sampled negative, -1 not sampled; `box_targets`
        float32 `[B, A, 4]`: unweighted codes of every positive (sampled or not, as MG), zeros elsewhere.
    """
    labels = targets_lib.assign_targets(anchors, gt_boxes, gt_classes, positive_threshold=match_threshold,
                                        negative_threshold=unmatched_threshold)
    positive = labels["positive"]
    negative = tf.logical_not(tf.logical_or(positive, labels["ignore"]))
    kept_positive, kept_negative = _subsample(positive, negative, _noise(tf.shape(positive), seed),
                                              rpn_batch_size_per_im, rpn_fg_fraction)
    score_targets = tf.where(kept_positive, 1, tf.where(kept_negative, 0, -1))
    return {"score_targets": score_targets, "box_targets": labels["box_targets"]}
