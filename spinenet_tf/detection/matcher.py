"""IoU and the anchor-to-ground-truth matcher of RetinaNet, in TensorFlow ops only (no Keras, exportable).

RetinaNet (Lin et al., arXiv:1708.02002, §4): an anchor is positive when its best IoU with a ground-truth box is
>= 0.5, negative when < 0.4, ignored in between; each ground-truth box also keeps its best anchor. The code mirrors
Model Garden's `official/vision/ops/iou_similarity.py` and `official/vision/ops/box_matcher.py::BoxMatcher`
(`force_match_for_each_col=True`), vectorised over an optional batch dimension and with padded ground truth
handled by a mask. Note MG's RetinaNet *config* uses 0.5 / 0.5 (no ignored band); the paper uses 0.5 / 0.4.
"""

from __future__ import annotations

import tensorflow as tf

from spinenet_tf.detection.box_coder import check_boxes

# Match labels (detectron2's convention; MG's BoxMatcher uses 1 / -1 / -2 for the same three states).
POSITIVE = 1
NEGATIVE = 0
IGNORE = -1


def iou_matrix(boxes1: tf.Tensor, boxes2: tf.Tensor) -> tf.Tensor:
    """Pairwise intersection over union, `[..., N, 4]` x `[..., M, 4]` -> `[..., N, M]`.

    Leading dims broadcast (e.g. anchors `[N, 4]` against a batch of ground truth `[B, M, 4]` gives `[B, N, M]`).
    Pairs that do not intersect get exactly 0, also for zero-area boxes (no 0 / 0).
    """
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    boxes1 = tf.cast(boxes1, tf.float32)
    boxes2 = tf.cast(boxes2, tf.float32)
    y1min, x1min, y1max, x1max = [c[..., :, None] for c in tf.unstack(boxes1, axis=-1)]
    y2min, x2min, y2max, x2max = [c[..., None, :] for c in tf.unstack(boxes2, axis=-1)]
    heights = tf.maximum(0.0, tf.minimum(y1max, y2max) - tf.maximum(y1min, y2min))
    widths = tf.maximum(0.0, tf.minimum(x1max, x2max) - tf.maximum(x1min, x2min))
    intersections = heights * widths
    unions = (y1max - y1min) * (x1max - x1min) + (y2max - y2min) * (x2max - x2min) - intersections
    return tf.where(tf.equal(intersections, 0.0), tf.zeros_like(intersections), intersections / unions)


def match(similarity: tf.Tensor, *, positive_threshold: float = 0.5, negative_threshold: float = 0.4,
          allow_low_quality_matches: bool = True, valid: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Matches each row (anchor) of a similarity matrix to its best column (ground-truth box).

    Rules, on the best similarity s of each anchor:
    - s >= positive_threshold: `POSITIVE`; negative_threshold <= s < positive_threshold: `IGNORE`;
      s < negative_threshold: `NEGATIVE`.
    - `allow_low_quality_matches`: each valid column's best row (first index on ties) becomes `POSITIVE` and
      matched to that column whatever its IoU; when several columns pick the same row, the lowest column index
      wins (MG's `force_match_for_each_col`).
    - Invalid (padding) columns never match. An image without valid columns has only `NEGATIVE` anchors.

    Args:
        similarity: `[A, G]` or `[B, A, G]` (e.g. IoU of anchors with ground truth). G may be 0.
        positive_threshold: Lowest similarity of a positive. MG RetinaNet: 0.5 (`match_threshold`).
        negative_threshold: Similarities below it are negatives. MG RetinaNet: 0.5 (`unmatched_threshold`);
            RetinaNet paper: 0.4.
        allow_low_quality_matches: Force-match every ground-truth box to its best anchor.
        valid: Optional bool `[G]` / `[B, G]`, False for padded columns.

    Returns:
        (matched_index, labels): int32 `[A]` / `[B, A]` each. `matched_index` is the matched column of positives
        (and the best column otherwise, meaningless for negatives and ignored anchors; 0 when G == 0); `labels` is
        one of `POSITIVE`, `NEGATIVE`, `IGNORE`.
    """
    if negative_threshold > positive_threshold:
        raise ValueError(f"negative_threshold={negative_threshold} > positive_threshold={positive_threshold}")
    unbatched = similarity.shape.rank == 2
    if unbatched:
        similarity = similarity[None]
        valid = None if valid is None else valid[None]
    similarity = tf.cast(similarity, tf.float32)
    batch, num_anchors = tf.shape(similarity)[0], tf.shape(similarity)[1]
    if valid is None:
        valid = tf.ones([batch, tf.shape(similarity)[2]], tf.bool)
    # A padded column gets similarity -1 (MG's IouSimilarity mask value) so it never wins a row; one extra padded
    # column makes G >= 1, so the argmaxes below are defined for images without ground truth, with no tf.cond.
    similarity = tf.where(valid[:, None, :], similarity, -1.0)
    similarity = tf.pad(similarity, [[0, 0], [0, 0], [0, 1]], constant_values=-1.0)
    valid = tf.pad(valid, [[0, 0], [0, 1]], constant_values=False)

    matched_index = tf.argmax(similarity, axis=2, output_type=tf.int32)
    best = tf.reduce_max(similarity, axis=2)
    labels = tf.where(best >= positive_threshold, POSITIVE, tf.where(best >= negative_threshold, IGNORE, NEGATIVE))

    if allow_low_quality_matches:
        best_anchor = tf.argmax(similarity, axis=1, output_type=tf.int32)  # [B, G]: each column's best row
        # Each row's lowest valid column among those that picked it, by a segment minimum over the G picks (MG
        # builds a [B, G, A] one-hot and takes its argmax over G: the same result, without the [B, G, A] tensor;
        # timing in bench/README.md, Mask R-CNN section).
        num_columns = tf.shape(similarity)[2]
        columns = tf.where(valid, tf.range(num_columns)[None, :], num_columns)
        rows = best_anchor + tf.range(batch)[:, None] * num_anchors
        column = tf.math.unsorted_segment_min(columns, rows, batch * num_anchors)  # int32 max where none
        column = tf.reshape(column, [batch, num_anchors])
        forced = column < num_columns
        matched_index = tf.where(forced, column, matched_index)
        labels = tf.where(forced, POSITIVE, labels)
    labels = tf.cast(labels, tf.int32)
    if unbatched:
        return matched_index[0], labels[0]
    return matched_index, labels
