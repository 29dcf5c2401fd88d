"""`MaskRCNN` on a SpineNet backbone (He et al., arXiv:1703.06870; SpineNet, arXiv:1912.05027 §5.1).

SpineNet P3-P7 (no FPN) -> `RPNHead` -> `ProposalGenerator` (per-level top-k + NMS, image top-k) -> 7x7 RoIAlign ->
`DetectionHead` -> `DetectionGenerator` (class-wise NMS, top-k detections) -> 14x14 RoIAlign of the detections ->
`MaskHead` -> 28x28 mask probabilities of each detection's class. The model's call runs this inference path and
returns the detections with the intermediate outputs (`rpn_scores`, `rpn_boxes`, `rois`, `cls_outputs`,
`box_outputs`), the layout of Model Garden's `MaskRCNNModel` at eval time. TensorFlow backend only.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from spinenet_tf.detection import anchors as anchors_lib
from spinenet_tf.detection.maskrcnn import roi_ops
from spinenet_tf.detection.maskrcnn.heads import DetectionHead, MaskHead
from spinenet_tf.detection.retinanet import FlattenLevels
from spinenet_tf.detection.maskrcnn.rpn_head import RPNHead
from spinenet_tf.layers import keras_fit
from spinenet_tf.layers.tracking import CheckpointCollections


@keras.saving.register_keras_serializable(package="spinenet_tf")
class MaskRCNN(CheckpointCollections, keras.Model):
    """Mask R-CNN: backbone P3..P7 -> RPN -> proposals -> box head -> detections -> mask head.

    Args:
        backbone: A `SpineNet` / `SpineNetMobile` with a fixed input shape (anchors depend on it).
        num_classes: Classes including the background class 0 (91 in Model Garden's COCO layout).
        num_scales, aspect_ratios, anchor_size: RPN anchors per level (3 scales x 3 ratios; size anchor_size *
            stride: 3 for SpineNet-49S/49/96, 4 for 143 (MG yaml), 5 for 190 (the authors' yaml)).
        rpn_num_convs, rpn_num_filters: The RPN's shared convs (1 x 256; 128 for 49S, 384 for 190).
        box_num_convs, box_num_filters, box_num_fcs, box_fc_dims: `DetectionHead` (4 x 256 convs, 1 x 1024 dense).
        mask_num_convs, mask_num_filters: `MaskHead` (4 x 256).
        head_activation: Activation of the three heads.
        roi_crop_size, mask_crop_size: RoIAlign output sizes (7 for the box head, 14 for the mask head).
        rpn_pre_nms_top_k, rpn_nms_iou_threshold, rpn_num_proposals: Proposal settings in training (2000, 0.7, 1000).
        test_rpn_pre_nms_top_k, test_rpn_nms_iou_threshold: The same at inference (1000, 0.7); the number of
            proposals is the same in both (the second stage has a static RoI count).
        score_threshold, pre_nms_top_k, iou_threshold, max_detections: Final detections (MG: 0.05, 5000, 0.5, 100).
        num_sampled_rois, num_sampled_masks: Training only: RoIs sampled per image for the box head (a quarter at
            most foreground) and foreground RoIs given a mask target (MG's `roi_sampler.num_sampled_rois` 512 and
            `mask_sampler.num_sampled_masks` 128). `maskrcnn_training.training_outputs` caps them at what the
            proposals allow; the mask head's training cost is proportional to the second.
        weight_decay: L2 penalty `weight_decay / 2 * sum(kernel**2)` (MG's `l2(weight_decay / 2)` regularizers).

    Call:
        images `[B, H, W, 3]` (normalised as for RetinaNet). Returns a dict: `boxes` `[B, D, 4]` (ymin, xmin, ymax,
        xmax in input pixels), `scores` `[B, D]`, `classes` int32 `[B, D]` (1..num_classes-1, 0 for padding),
        `num_detections` int32 `[B]`, `masks` `[B, D, 28, 28]` probabilities in each box's frame; and
        `rpn_scores` `[B, N, 1]` / `rpn_boxes` `[B, N, 4]` (all anchors, anchor layout), `rois` `[B, K, 4]`,
        `cls_outputs` `[B, K, num_classes]`, `box_outputs` `[B, K, 4 * num_classes]`. D = max_detections,
        K = rpn_num_proposals.
    """

    def __init__(self, backbone, num_classes: int, num_scales: int = 3,
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), anchor_size: float = 3.0, rpn_num_convs: int = 1,
                 rpn_num_filters: int = 256, box_num_convs: int = 4, box_num_filters: int = 256, box_num_fcs: int = 1,
                 box_fc_dims: int = 1024, mask_num_convs: int = 4, mask_num_filters: int = 256,
                 head_activation: str = "swish", roi_crop_size: int = 7, mask_crop_size: int = 14,
                 rpn_pre_nms_top_k: int = 2000, rpn_nms_iou_threshold: float = 0.7, rpn_num_proposals: int = 1000,
                 test_rpn_pre_nms_top_k: int = 1000, test_rpn_nms_iou_threshold: float = 0.7,
                 score_threshold: float = 0.05, pre_nms_top_k: int = 5000, iou_threshold: float = 0.5,
                 max_detections: int = 100, num_sampled_rois: int = 512, num_sampled_masks: int = 128,
                 weight_decay: float = 0.0, **kwargs):
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: must be >= 2 (class 0 is the background)")
        for key, value in (("num_sampled_rois", num_sampled_rois), ("num_sampled_masks", num_sampled_masks)):
            if value < 1:
                raise ValueError(f"{key}={value}: must be >= 1")
        height, width = backbone.image_shape[:2]
        if height is None or width is None:
            raise ValueError("MaskRCNN needs a backbone with a fixed input size (anchors depend on it)")
        norm = dict(norm_momentum=backbone.norm_momentum, norm_epsilon=backbone.norm_epsilon,
                    use_sync_bn=backbone.use_sync_bn)
        # === Layers ===
        self.backbone = backbone
        self.anchor_generator = anchors_lib.AnchorGenerator(backbone.min_level, backbone.max_level, num_scales,
                                                            aspect_ratios, anchor_size)
        self.rpn_head = RPNHead(self.anchor_generator.anchors_per_location, backbone.min_level, backbone.max_level,
                                rpn_num_convs, rpn_num_filters, activation=head_activation, name="rpn_head", **norm)
        self.proposal_generator = roi_ops.ProposalGenerator(
            self.anchor_generator.get_config(), (height, width), rpn_pre_nms_top_k, rpn_nms_iou_threshold,
            rpn_num_proposals, test_rpn_pre_nms_top_k, test_rpn_nms_iou_threshold, rpn_num_proposals,
            name="proposal_generator")
        self.roi_aligner = roi_ops.RoIAligner(roi_crop_size, name="roi_aligner")
        self.detection_head = DetectionHead(num_classes, box_num_convs, box_num_filters, box_num_fcs, box_fc_dims,
                                            activation=head_activation, name="detection_head", **norm)
        self.detection_generator = roi_ops.DetectionGenerator((height, width), score_threshold, pre_nms_top_k,
                                                              iou_threshold, max_detections, name="detection_generator")
        self.mask_roi_aligner = roi_ops.RoIAligner(mask_crop_size, name="mask_roi_aligner")
        self.mask_head = MaskHead(num_classes, 2, mask_num_convs, mask_num_filters, activation=head_activation,
                                  name="mask_head", **norm)
        # === Functional model ===
        inputs = keras.Input(shape=backbone.image_shape, name="image")
        features = backbone(inputs)
        rpn_scores, rpn_boxes = self.rpn_head(features)
        rois = self.proposal_generator(rpn_scores, rpn_boxes)
        cls_outputs, box_outputs = self.detection_head(self.roi_aligner(features, rois))
        detections = self.detection_generator(cls_outputs, box_outputs, rois)
        mask_logits = self.mask_head([self.mask_roi_aligner(features, detections["boxes"]), detections["classes"]])
        outputs = {**detections, "masks": keras.layers.Activation("sigmoid", name="mask_probabilities")(mask_logits),
                   "rpn_scores": FlattenLevels(1, name="flatten_rpn_scores")(rpn_scores),
                   "rpn_boxes": FlattenLevels(4, name="flatten_rpn_boxes")(rpn_boxes),
                   "rois": rois, "cls_outputs": cls_outputs, "box_outputs": box_outputs}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # === Config ===
        self.num_classes = num_classes
        self.head_config = dict(rpn_num_convs=rpn_num_convs, rpn_num_filters=rpn_num_filters,
                                box_num_convs=box_num_convs, box_num_filters=box_num_filters, box_num_fcs=box_num_fcs,
                                box_fc_dims=box_fc_dims, mask_num_convs=mask_num_convs,
                                mask_num_filters=mask_num_filters, head_activation=head_activation,
                                roi_crop_size=roi_crop_size, mask_crop_size=mask_crop_size)
        self.proposal_config = dict(rpn_pre_nms_top_k=rpn_pre_nms_top_k, rpn_nms_iou_threshold=rpn_nms_iou_threshold,
                                    rpn_num_proposals=rpn_num_proposals,
                                    test_rpn_pre_nms_top_k=test_rpn_pre_nms_top_k,
                                    test_rpn_nms_iou_threshold=test_rpn_nms_iou_threshold)
        self.decode_config = dict(score_threshold=score_threshold, pre_nms_top_k=pre_nms_top_k,
                                  iou_threshold=iou_threshold, max_detections=max_detections)
        self.sampler_config = dict(num_sampled_rois=num_sampled_rois, num_sampled_masks=num_sampled_masks)
        self.weight_decay = weight_decay
        self.image_size = (height, width)
        # Anchors are fixed by the input size: a NumPy constant in the flat anchor layout, not a weight.
        self.anchor_boxes = np.concatenate([a for _, a in sorted(self.proposal_generator.anchors.items())], axis=0)

    def l2_loss(self) -> tf.Tensor:
        """weight_decay / 2 * sum of squared conv and dense kernels (not biases, not batch norm)."""
        return keras_fit.l2_loss(self.trainable_weights, self.weight_decay)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        outputs = self(x, training=False)
        return {key: outputs[key] for key in ("boxes", "scores", "classes", "num_detections", "masks")}

    # === Config ===
    def get_config(self):
        anchors = self.anchor_generator
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone), "num_classes": self.num_classes,
                "num_scales": anchors.num_scales, "aspect_ratios": list(anchors.aspect_ratios),
                "anchor_size": anchors.anchor_size, **self.head_config, **self.proposal_config,
                **self.decode_config, **self.sampler_config, "weight_decay": self.weight_decay}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
