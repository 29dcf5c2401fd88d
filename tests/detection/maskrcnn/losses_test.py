"""Tests of `spinenet_tf.detection.maskrcnn.losses` against Model Garden's `maskrcnn_losses` (tf-models-official
2.20.0) on the same random inputs, and a hand-computed case for each loss."""

import math

import numpy as np
import pytest
import tensorflow as tf

from spinenet_tf.detection import box_coder
from spinenet_tf.detection.maskrcnn import losses as maskrcnn_losses

SIZES = {3: 8, 4: 4, 5: 2}  # square levels of a 64x64 input, 3 anchors per location
BATCH = 2


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    f32 = lambda *shape: tf.constant(rng.standard_normal(shape).astype(np.float32))  # noqa: E731
    scores = {level: f32(BATCH, s, s, 3) for level, s in SIZES.items()}
    score_targets = {level: tf.constant(rng.integers(-1, 2, (BATCH, s, s, 3)).astype(np.int32))
                     for level, s in SIZES.items()}
    boxes = {level: f32(BATCH, s, s, 12) for level, s in SIZES.items()}
    # Box targets are zero where the anchor is not positive (as the anchor labeler writes them).
    box_targets = {level: tf.where(tf.repeat(score_targets[level] == 1, 4, axis=-1), f32(BATCH, s, s, 12), 0.0)
                   for level, s in SIZES.items()}
    classes = tf.constant(rng.integers(0, 5, (BATCH, 30)).astype(np.int32))
    return dict(scores=scores, score_targets=score_targets, boxes=boxes, box_targets=box_targets,
                class_outputs=f32(BATCH, 30, 5), class_targets=classes, box_outputs=f32(BATCH, 30, 20),
                frcnn_box_targets=f32(BATCH, 30, 4), mask_outputs=f32(BATCH, 30, 28, 28),
                mask_targets=tf.constant((rng.uniform(size=(BATCH, 30, 28, 28)) > 0.5).astype(np.float32)))


def _flat(levels):
    return tf.concat([tf.reshape(levels[level], [BATCH, -1]) for level in sorted(levels)], axis=1)


@pytest.mark.oracle
def test_losses_match_model_garden(inputs):
    from official.vision.losses import maskrcnn_losses as mg
    str_keys = lambda levels: {str(k): v for k, v in levels.items()}  # noqa: E731
    pairs = {
        "rpn_score": (maskrcnn_losses.rpn_score_loss(_flat(inputs["scores"]), _flat(inputs["score_targets"])),
                      mg.RpnScoreLoss(256)(str_keys(inputs["scores"]), str_keys(inputs["score_targets"]))),
        "rpn_box": (maskrcnn_losses.rpn_box_loss(inputs["boxes"], inputs["box_targets"]),
                    mg.RpnBoxLoss(1.0 / 9.0)(str_keys(inputs["boxes"]), str_keys(inputs["box_targets"]))),
        "frcnn_class": (maskrcnn_losses.fast_rcnn_class_loss(inputs["class_outputs"], inputs["class_targets"]),
                        mg.FastrcnnClassLoss()(inputs["class_outputs"], inputs["class_targets"])),
        "frcnn_box": (maskrcnn_losses.fast_rcnn_box_loss(inputs["box_outputs"], inputs["class_targets"],
                                                         inputs["frcnn_box_targets"]),
                      mg.FastrcnnBoxLoss(1.0)(inputs["box_outputs"], inputs["class_targets"],
                                              inputs["frcnn_box_targets"])),
        "mask": (maskrcnn_losses.mask_loss(inputs["mask_outputs"], inputs["mask_targets"], inputs["class_targets"]),
                 mg.MaskrcnnLoss()(inputs["mask_outputs"], inputs["mask_targets"], inputs["class_targets"])),
    }
    for name, (ours, theirs) in pairs.items():
        assert float(theirs) > 0, name
        np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-5, err_msg=name)


def test_rpn_score_loss_by_hand():
    # Anchors: positive at logit 0 (log 2), negative at logit 0 (log 2), ignored; normaliser 1 image x 2.
    loss = maskrcnn_losses.rpn_score_loss(tf.zeros([1, 3]), tf.constant([[1, 0, -1]]), rpn_batch_size_per_im=2)
    np.testing.assert_allclose(float(loss), 2 * math.log(2) / 2, rtol=1e-6)


def test_fast_rcnn_box_loss_uses_the_target_class_box_of_foreground_rois():
    # RoI 0 is class 2: its box is columns 8..11 (error 0.5 on one coordinate: Huber 0.125); RoI 1 is background.
    outputs = np.zeros((1, 2, 12), np.float32)
    outputs[0, 0, 8] = 0.5
    outputs[0, 0, 0] = outputs[0, 1, 8] = 100.0  # other classes' boxes and background RoIs do not count
    loss = maskrcnn_losses.fast_rcnn_box_loss(outputs, tf.constant([[2, 0]]), tf.zeros([1, 2, 4]))
    np.testing.assert_allclose(float(loss), 0.125 / (4 + 0.01), rtol=1e-6)


def test_mask_loss_ignores_background_rois():
    logits = tf.constant([[np.zeros((2, 2)), np.full((2, 2), 50.0)]], tf.float32)  # RoI 1 would cost 50 a pixel
    loss = maskrcnn_losses.mask_loss(logits, tf.ones([1, 2, 2, 2]), tf.constant([[3, 0]]))
    np.testing.assert_allclose(float(loss), 4 * math.log(2) / (4 + 0.01), rtol=1e-6)


def test_fast_rcnn_box_targets_are_weighted_codes_and_zero_for_background():
    rois = tf.constant([[[0, 0, 10, 10], [0, 0, 10, 10]]], tf.float32)
    gt = tf.constant([[[1, 2, 11, 12], [1, 2, 11, 12]]], tf.float32)
    targets = maskrcnn_losses.fast_rcnn_box_targets(gt, rois, tf.constant([[1, 0]])).numpy()
    np.testing.assert_allclose(targets[0, 0], box_coder.encode_boxes(gt[0, 0], rois[0, 0], [10, 10, 5, 5]).numpy())
    np.testing.assert_allclose(targets[0, 0, :2], [1.0, 2.0], rtol=1e-5)  # (0.1, 0.2) of the RoI size, x10
    assert not targets[0, 1].any()
