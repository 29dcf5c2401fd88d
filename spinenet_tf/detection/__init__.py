"""Detection: RetinaNet anchors, box coder, matcher, targets, losses and post-processing (pure TF ops).

Conventions (see `anchors`): level L has stride 2**L; boxes are `[ymin, xmin, ymax, xmax]` in input pixels; flat
per-anchor tensors follow the anchor layout (level, y, x, anchor), the head outputs' `[B, H, W, A * K]` order.
The two-stage Mask R-CNN (its heads, RoI ops, targets, losses and training pass) is the `maskrcnn` subpackage.
"""

from spinenet_tf.detection.anchors import (AnchorGenerator, concat_anchors, feature_sizes, flatten_levels,
                                           generate_anchors, split_levels)
from spinenet_tf.detection.box_coder import clip_boxes, decode_boxes, encode_boxes
from spinenet_tf.detection.losses import retinanet_loss, sigmoid_focal_loss
from spinenet_tf.detection.matcher import iou_matrix, match
from spinenet_tf.detection.postprocess import decode_predictions, generate_detections, non_max_suppression
from spinenet_tf.detection.targets import assign_targets, targets_by_level, valid_ground_truth

__all__ = ["AnchorGenerator", "assign_targets", "clip_boxes", "concat_anchors", "decode_boxes",
           "decode_predictions", "encode_boxes", "feature_sizes", "flatten_levels", "generate_anchors",
           "generate_detections", "iou_matrix", "match", "non_max_suppression", "retinanet_loss",
           "sigmoid_focal_loss", "split_levels", "targets_by_level", "valid_ground_truth"]
