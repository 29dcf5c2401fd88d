"""Mask R-CNN's training forward pass and total loss (He et al., arXiv:1703.06870 §3).

Model Garden's `MaskRCNNModel.call(training=True)` with its task's `build_losses`
(`official/vision/modeling/maskrcnn_model.py`, `official/vision/tasks/maskrcnn.py`, tf-models-official 2.20.0):
backbone -> RPN -> proposals (training settings, no gradient) -> RoI sampling against the ground truth -> box head
on the sampled RoIs -> mask head on the foreground ones. The loss adds RPN objectness + box, Fast R-CNN class +
box and the mask loss (all weight 1, MG's defaults) and the model's L2 term. The RPN targets come with the labels
(`DetectionInput.instance_train_fn` builds them per example, as MG's parser); labels without them get them built
here per batch from the padded ground truth (the same law).
"""

from __future__ import annotations

import tensorflow as tf

from spinenet_tf.detection import anchors as anchors_lib
from spinenet_tf.detection.maskrcnn import losses as maskrcnn_losses
from spinenet_tf.detection.maskrcnn import targets as maskrcnn_targets

# MG's maskrcnn config: roi_sampler.foreground_fraction 0.25 (the RoI counts are `MaskRCNN` settings), RPN anchor
# sampling 256 per image.
FOREGROUND_FRACTION = 0.25
RPN_BATCH_SIZE_PER_IM = 256


def _split_levels(flat: tf.Tensor, counts: dict[int, int]) -> dict[int, tf.Tensor]:
    """`[B, N, K]` in the anchor layout -> `{level: [B, N_l, K]}` (the inverse of `flatten_levels`)."""
    levels = sorted(counts)
    return dict(zip(levels, tf.split(flat, [counts[level] for level in levels], axis=1)))


def training_outputs(model, images, labels, training: bool = True, seed: tf.Tensor | None = None,
                     num_sampled_rois: int | None = None, num_sampled_masks: int | None = None
                     ) -> dict[str, tf.Tensor]:
    """Runs the training path of a `MaskRCNN` and returns head outputs beside their targets.

    Args:
        model: A `MaskRCNN`.
        images: `[B, H, W, 3]` normalised images.
        labels: `DetectionInput.instance_train_fn` labels, batched: `gt_boxes` `[B, G, 4]` (-1 padded),
            `gt_classes` `[B, G]` (-1 padded, 1..C-1), `gt_masks` `[B, G, M, M]` box-aligned masks, and
            optionally `rpn_score_targets` `[B, A]` / `rpn_box_targets` `[B, A, 4]` in the model's anchor layout
            (absent: built here with `seed`).
        training: Batch-norm mode (False still samples RoIs; used to check losses without updating statistics).
        seed: Optional `[2]` int seed for the RoI sample (and the RPN's, when the labels lack its targets).
        num_sampled_rois, num_sampled_masks: RoIs for the box head and masks for the mask head per image; None
            takes the model's (`MaskRCNN.sampler_config`, MG: 512, 128). The RoIs are capped by the number of
            proposals and the masks by the most foreground RoIs a sample holds (`FOREGROUND_FRACTION` of the
            RoIs), so a shrunk model gets no mask-head rows that can only be padding.

    Returns:
        A dict: `rpn_scores` `[B, A]` logits, `rpn_boxes` `{level: [B, A_l, 4]}`, `rpn_score_targets`,
        `rpn_box_targets` (same layouts), `cls_outputs` `[B, K, C]`, `box_outputs` `[B, K, 4C]`, `class_targets`
        `[B, K]`, `box_targets` `[B, K, 4]`, `mask_outputs` `[B, Km, S, S]` logits, `mask_targets`, `mask_classes`.
    """
    gt_boxes = tf.cast(labels["gt_boxes"], tf.float32)
    gt_classes = tf.cast(labels["gt_classes"], tf.int32)
    # A dataset's images may have unknown height and width; the proposal and RoI ops need the static input size.
    images = tf.ensure_shape(images, (images.shape[0], *model.backbone.image_shape))
    features = model.backbone(images, training=training)
    raw_scores, raw_boxes = model.rpn_head(features, training=training)
    # Proposals carry no gradient (MG stops it: the RoIs are inputs of the second stage, not outputs to train).
    rois = tf.stop_gradient(model.proposal_generator(raw_scores, raw_boxes, training=True))
    counts = {int(level): len(a) for level, a in model.proposal_generator.anchors.items()}
    rpn_seed, roi_seed = (None, None) if seed is None else (seed, tf.reverse(seed, [0]) + 1)
    if "rpn_score_targets" in labels:
        rpn = {"score_targets": tf.cast(labels["rpn_score_targets"], tf.int32),
               "box_targets": tf.cast(labels["rpn_box_targets"], tf.float32)}
    else:
        rpn = maskrcnn_targets.rpn_targets(tf.constant(model.anchor_boxes, tf.float32), gt_boxes, gt_classes,
                                           rpn_batch_size_per_im=RPN_BATCH_SIZE_PER_IM, seed=rpn_seed)
    settings = model.sampler_config
    num_sampled_rois = settings["num_sampled_rois"] if num_sampled_rois is None else num_sampled_rois
    num_sampled_masks = settings["num_sampled_masks"] if num_sampled_masks is None else num_sampled_masks
    num_rois = min(num_sampled_rois, model.proposal_generator.num_rois)  # static: the heads need it
    num_masks = min(num_sampled_masks, max(1, int(num_rois * FOREGROUND_FRACTION)))
    rois, matched_boxes, matched_classes, matched_indices = maskrcnn_targets.sample_rois(
        rois, gt_boxes, gt_classes, num_sampled_rois=num_rois, foreground_fraction=FOREGROUND_FRACTION,
        seed=roi_seed)
    rois = tf.stop_gradient(rois)
    cls_outputs, box_outputs = model.detection_head(model.roi_aligner(features, rois), training=training)
    mask_size = model.head_config["mask_crop_size"] * 2  # the mask head's 2x deconv
    mask_rois, mask_classes, mask_targets = maskrcnn_targets.sample_mask_targets(
        rois, matched_boxes, matched_classes, matched_indices, tf.cast(labels["gt_masks"], tf.float32),
        num_sampled_masks=num_masks, mask_target_size=mask_size)
    mask_outputs = model.mask_head([model.mask_roi_aligner(features, mask_rois), mask_classes], training=training)
    return {"rpn_scores": anchors_lib.flatten_levels(raw_scores, 1)[..., 0],
            "rpn_boxes": _split_levels(anchors_lib.flatten_levels(raw_boxes, 4), counts),
            "rpn_score_targets": rpn["score_targets"],
            "rpn_box_targets": _split_levels(rpn["box_targets"], counts),
            "cls_outputs": cls_outputs, "box_outputs": box_outputs, "class_targets": matched_classes,
            "box_targets": maskrcnn_losses.fast_rcnn_box_targets(matched_boxes, rois, matched_classes),
            "mask_outputs": mask_outputs, "mask_targets": mask_targets, "mask_classes": mask_classes}


def compute_losses(model, images, labels, training: bool = True, seed: tf.Tensor | None = None,
                   **sample_settings) -> dict[str, tf.Tensor]:
    """The Mask R-CNN loss terms of one batch (see `training_outputs` for the arguments).

    Returns:
        float32 scalars: `loss` (the sum of the others), `rpn_score_loss`, `rpn_box_loss`, `frcnn_cls_loss`,
        `frcnn_box_loss`, `mask_loss`, `l2_loss`.
    """
    out = training_outputs(model, images, labels, training=training, seed=seed, **sample_settings)
    terms = {
        "rpn_score_loss": maskrcnn_losses.rpn_score_loss(out["rpn_scores"], out["rpn_score_targets"],
                                                         RPN_BATCH_SIZE_PER_IM),
        "rpn_box_loss": maskrcnn_losses.rpn_box_loss(out["rpn_boxes"], out["rpn_box_targets"]),
        "frcnn_cls_loss": maskrcnn_losses.fast_rcnn_class_loss(out["cls_outputs"], out["class_targets"]),
        "frcnn_box_loss": maskrcnn_losses.fast_rcnn_box_loss(out["box_outputs"], out["class_targets"],
                                                             out["box_targets"]),
        "mask_loss": maskrcnn_losses.mask_loss(out["mask_outputs"], out["mask_targets"], out["mask_classes"]),
        "l2_loss": model.l2_loss(),
    }
    return {"loss": tf.add_n([tf.cast(v, tf.float32) for v in terms.values()]), **terms}

