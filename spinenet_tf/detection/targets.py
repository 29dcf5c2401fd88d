"""RetinaNet training targets: anchor labels and encoded boxes, in TensorFlow ops only (exportable, tf.data-safe).

Mirrors Model Garden's `official/vision/ops/anchor.py::AnchorLabeler.label_anchors` together with the empty-box
filter of `official/vision/dataloaders/retinanet_input.py` (tf-models-official 2.20.0), for RetinaNet
(Lin et al., arXiv:1708.02002). Graph-mode only: no Python loop over boxes, works inside `tf.data.Dataset.map` on
one image (`[G, 4]`) or on a batch (`[B, G, 4]`) of fixed-size, padded ground truth.

Class convention: a positive anchor's `cls_targets` is the ground-truth class id, which is the index of the head's
class channel (in [0, num_classes)). Every other anchor gets -1, so `tf.one_hot(cls_targets, num_classes)` gives
all-zero rows for background, as MG. For COCO, MG keeps the dataset's category ids 1..90 with num_classes = 91
(channel 0 is never a positive); `postprocess.generate_detections(skip_class_zero=True)` drops that channel the way
MG's detection generator does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from spinenet_tf.detection import anchors as anchors_lib
from spinenet_tf.detection import box_coder, matcher


def valid_ground_truth(gt_boxes: tf.Tensor, gt_classes: tf.Tensor) -> tf.Tensor:
    """True for real ground truth: class >= 0 and a box with positive height and width.

    Padding (class -1, or an all-zero box) is False; so are empty boxes, which MG's RetinaNet parser drops
    (`box_ops.get_non_empty_box_indices`) before labelling.
    """
    box_coder.check_boxes(gt_boxes, "gt_boxes")
    height = gt_boxes[..., 2] - gt_boxes[..., 0]
    width = gt_boxes[..., 3] - gt_boxes[..., 1]
    return tf.logical_and(gt_classes >= 0, tf.logical_and(height > 0, width > 0))


def assign_targets(anchors: tf.Tensor | Mapping[int, tf.Tensor], gt_boxes: tf.Tensor, gt_classes: tf.Tensor, *,
                   positive_threshold: float = 0.5, negative_threshold: float = 0.4,
                   allow_low_quality_matches: bool = True,
                   box_coder_weights: Sequence[float] | None = None) -> dict[str, tf.Tensor]:
    """Labels every anchor and encodes its matched box (RetinaNet rules, see `matcher.match`).

    Args:
        anchors: Flat anchors `[A, 4]` in the anchor layout, or `{level: [A_l, 4]}` from `generate_anchors`.
        gt_boxes: `[G, 4]` or `[B, G, 4]` ground-truth boxes `[ymin, xmin, ymax, xmax]` in input pixels, padded
            with zero boxes and/or class -1 (see `valid_ground_truth`). G may be 0.
        gt_classes: int `[G]` or `[B, G]` class ids in [0, num_classes), -1 for padding.
        positive_threshold: IoU at or above which an anchor is positive. MG RetinaNet and the paper: 0.5.
        negative_threshold: IoU below which an anchor is negative; in between it is ignored.
            Paper: 0.4. MG's RetinaNet configs use 0.5 (no ignored band).
        allow_low_quality_matches: Each ground-truth box keeps its best anchor, whatever the IoU (MG: always on).
        box_coder_weights: Scale factors for (ty, tx, th, tw); MG RetinaNet: None.

    Returns:
        A dict, `[...]` being `[A]` or `[B, A]`:
        - `cls_targets`: int32 `[...]`, the class of positives, -1 elsewhere.
        - `box_targets`: float32 `[..., 4]`, (ty, tx, th, tw) of positives, 0 elsewhere.
        - `positive`: bool `[...]`, anchors that train both heads.
        - `ignore`: bool `[...]`, anchors left out of the classification loss (neither positive nor negative).

    Example:
        anchors = concat_anchors(generate_anchors(3, 7, 3, [0.5, 1.0, 2.0], 3.0, (640, 640)))
        targets = assign_targets(anchors, boxes, classes)   # inside dataset.map
    """
    if isinstance(anchors, Mapping):
        anchors = anchors_lib.concat_anchors(anchors)
    anchors, gt_boxes, gt_classes = (tf.convert_to_tensor(t) for t in (anchors, gt_boxes, gt_classes))
    box_coder.check_boxes(anchors, "anchors")
    box_coder.check_boxes(gt_boxes, "gt_boxes")
    if gt_boxes.shape.rank not in (2, 3):
        raise ValueError(f"gt_boxes must be [G, 4] or [B, G, 4], got shape {gt_boxes.shape}")
    unbatched = gt_boxes.shape.rank == 2
    anchors = tf.cast(anchors, tf.float32)
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_classes = tf.cast(tf.reshape(gt_classes, tf.shape(gt_boxes)[:-1]), tf.int32)
    if unbatched:
        gt_boxes, gt_classes = gt_boxes[None], gt_classes[None]
    # One padding row keeps the gathers below in range when G == 0 (`match` returns index 0 there).
    gt_boxes = tf.pad(gt_boxes, [[0, 0], [0, 1], [0, 0]])
    gt_classes = tf.pad(gt_classes, [[0, 0], [0, 1]], constant_values=-1)

    valid = valid_ground_truth(gt_boxes, gt_classes)
    matched, labels = matcher.match(matcher.iou_matrix(anchors, gt_boxes), positive_threshold=positive_threshold,
                                    negative_threshold=negative_threshold,
                                    allow_low_quality_matches=allow_low_quality_matches, valid=valid)
    positive = tf.equal(labels, matcher.POSITIVE)
    cls_targets = tf.where(positive, tf.gather(gt_classes, matched, batch_dims=1), -1)
    codes = box_coder.encode_boxes(tf.gather(gt_boxes, matched, batch_dims=1), anchors, box_coder_weights)
    # MG encodes a zero box for non-positives (finite junk, weight 0); zeros are easier to read and test.
    box_targets = tf.where(positive[..., None], codes, 0.0)
    targets = {"cls_targets": cls_targets, "box_targets": box_targets, "positive": positive,
               "ignore": tf.equal(labels, matcher.IGNORE)}
    if unbatched:
        targets = {key: value[0] for key, value in targets.items()}
    return targets


def targets_by_level(targets: Mapping[str, tf.Tensor], sizes: Mapping[int, tuple[int, int]],
                     anchors_per_location: int) -> dict[str, dict[int, tf.Tensor]]:
    """Reshapes flat targets to the head's per-level layout.

    `box_targets` `[..., A, 4]` -> `{level: [..., H_l, W_l, A_loc * 4]}`; per-anchor tensors (`cls_targets`,
    `positive`, `ignore`) `[..., A]` -> `{level: [..., H_l, W_l, A_loc]}` (MG's `anchor.unpack_targets` layout).

    Args:
        targets: The output of `assign_targets`.
        sizes: `{level: (H_l, W_l)}` from `anchors.feature_sizes`.
        anchors_per_location: A_loc (9 for RetinaNet).
    """
    return {key: anchors_lib.split_levels(value if key == "box_targets" else value[..., None], sizes,
                                          anchors_per_location)
            for key, value in targets.items()}
