"""Tests of `spinenet_tf.detection.maskrcnn.training`: the training forward pass and total loss of Mask R-CNN."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import spinenet_tf
from spinenet_tf.detection.maskrcnn import training as maskrcnn_training

# SpineNet-49S shrunk, narrow heads, 64 proposals (as the inference tests' TINY in model_test.py).
TINY = dict(filter_size_scale=0.25, endpoints_num_filters=16, rpn_num_filters=16, box_num_convs=1,
            box_num_filters=8, box_fc_dims=32, mask_num_convs=1, mask_num_filters=8, rpn_num_proposals=64,
            max_detections=8)
SIZE = 128


def _batch():
    """Two images with a bright square / disc each, boxes, classes (1-based) and box-aligned masks (-1 padded)."""
    images = np.zeros((2, SIZE, SIZE, 3), np.float32)
    boxes = np.full((2, 3, 4), -1.0, np.float32)
    classes = np.full((2, 3), -1, np.int32)
    masks = np.zeros((2, 3, 28, 28), np.float32)
    yy, xx = np.mgrid[:28, :28] + 0.5
    disc = ((yy - 14) ** 2 + (xx - 14) ** 2 <= 14 ** 2).astype(np.float32)
    for b, (y0, x0, h, cls) in enumerate(((20, 30, 50, 1), (60, 10, 40, 2))):
        boxes[b, 0] = (y0, x0, y0 + h, x0 + h)
        classes[b, 0] = cls
        masks[b, 0] = disc if cls == 2 else 1.0
        sy, sx = np.mgrid[y0:y0 + h, x0:x0 + h] + 0.5
        inside = (np.ones_like(sy, bool) if cls == 1 else
                  (sy - y0 - h / 2) ** 2 + (sx - x0 - h / 2) ** 2 <= (h / 2) ** 2)
        images[b, y0:y0 + h, x0:x0 + h][inside] = 2.0
    labels = {"gt_boxes": boxes, "gt_classes": classes, "gt_masks": masks}
    return tf.constant(images), {k: tf.constant(v) for k, v in labels.items()}


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return spinenet_tf.build_detector("maskrcnn-spinenet-49s", num_classes=4, input_shape=(SIZE, SIZE),
                                      weight_decay=1e-4, **TINY)


def test_training_outputs_pair_every_head_with_its_targets(model):
    images, labels = _batch()
    out = maskrcnn_training.training_outputs(model, images, labels, seed=tf.constant([1, 2]))
    anchors = model.anchor_boxes.shape[0]
    assert out["rpn_scores"].shape == out["rpn_score_targets"].shape == (2, anchors)
    assert sum(v.shape[1] for v in out["rpn_boxes"].values()) == anchors
    num_rois = 64  # the proposals: fewer than MG's 512
    assert out["cls_outputs"].shape == (2, num_rois, 4) and out["box_outputs"].shape == (2, num_rois, 16)
    assert out["class_targets"].shape == (2, num_rois)
    # At most a quarter of the sampled RoIs are foreground, so only that many get a mask-head row (MG: 128 of 512).
    assert out["mask_outputs"].shape == out["mask_targets"].shape == (2, num_rois // 4, 28, 28)
    classes = out["class_targets"].numpy()
    # The ground-truth boxes join the RoIs, so each image has foreground RoIs, all of its one class.
    assert set(np.unique(classes[0])) == {0, 1} and set(np.unique(classes[1])) == {0, 2}
    # Foreground mask targets of the square are near 1 inside their RoI; padding classes are 0.
    mask_classes = out["mask_classes"].numpy()
    square = out["mask_targets"].numpy()[0][mask_classes[0] == 1]
    assert square.size and square.max() == pytest.approx(1.0)
    positives = (out["rpn_score_targets"].numpy() == 1).sum(axis=1)
    assert np.all(positives >= 1)  # each box's best anchor is positive


def test_sample_counts_come_from_the_model_and_every_foreground_roi_gets_a_mask():
    keras.utils.set_random_seed(2)
    small = spinenet_tf.build_detector("maskrcnn-spinenet-49s", num_classes=4, input_shape=(SIZE, SIZE),
                                       **TINY, num_sampled_rois=32, num_sampled_masks=6)
    assert small.get_config()["num_sampled_rois"] == 32
    images, labels = _batch()
    out = maskrcnn_training.training_outputs(small, images, labels, seed=tf.constant([1, 2]))
    assert out["cls_outputs"].shape[1] == 32 and out["mask_outputs"].shape[1] == 6
    # The call's own counts win; the masks stay capped by the foreground a sample can hold (40 // 4).
    out = maskrcnn_training.training_outputs(small, images, labels, seed=tf.constant([1, 2]), num_sampled_rois=40,
                                             num_sampled_masks=100)
    assert out["cls_outputs"].shape[1] == 40 and out["mask_outputs"].shape[1] == 10
    foreground = (out["class_targets"].numpy() > 0).sum(axis=1)
    assert np.all((out["mask_classes"].numpy() > 0).sum(axis=1) == foreground)


def test_sample_counts_must_be_positive():
    with pytest.raises(ValueError, match="num_sampled_masks=0: must be >= 1"):
        spinenet_tf.build_detector("maskrcnn-spinenet-49s", num_classes=4, input_shape=(SIZE, SIZE), **TINY,
                                   num_sampled_masks=0)


def test_loss_is_the_sum_of_finite_terms(model):
    images, labels = _batch()
    terms = maskrcnn_training.compute_losses(model, images, labels, training=False, seed=tf.constant([3, 4]))
    values = {k: float(v) for k, v in terms.items()}
    assert all(np.isfinite(v) and v >= 0 for v in values.values()), values
    assert values["loss"] == pytest.approx(sum(v for k, v in values.items() if k != "loss"), rel=1e-5)
    assert values["mask_loss"] > 0 and values["frcnn_cls_loss"] > 0 and values["l2_loss"] > 0


def test_rpn_targets_in_the_labels_are_the_ones_trained_on(model):
    # The input pipeline's targets (`instance_train_fn`) replace the in-step ones: the same targets give the same
    # RPN losses, and targets that sample no anchor give none.
    images, labels = _batch()
    seed = tf.constant([3, 4])
    built = maskrcnn_training.training_outputs(model, images, labels, training=False, seed=seed)
    box_targets = built["rpn_box_targets"]
    given = dict(labels, rpn_score_targets=built["rpn_score_targets"],
                 rpn_box_targets=tf.concat([box_targets[level] for level in sorted(box_targets)], axis=1))
    in_step = maskrcnn_training.compute_losses(model, images, labels, training=False, seed=seed)
    from_labels = maskrcnn_training.compute_losses(model, images, given, training=False, seed=tf.constant([7, 8]))
    assert float(in_step["rpn_score_loss"]) > 0 and float(in_step["rpn_box_loss"]) > 0
    for key in ("rpn_score_loss", "rpn_box_loss"):
        assert float(from_labels[key]) == pytest.approx(float(in_step[key]), rel=1e-6)
    none = dict(labels, rpn_score_targets=-tf.ones_like(built["rpn_score_targets"]),
                rpn_box_targets=tf.zeros_like(given["rpn_box_targets"]))
    terms = maskrcnn_training.compute_losses(model, images, none, training=False, seed=seed)
    assert float(terms["rpn_score_loss"]) == 0.0 and float(terms["rpn_box_loss"]) == 0.0


def test_loss_decreases_over_a_few_steps(model):
    images, labels = _batch()
    optimizer = keras.optimizers.Adam(1e-2)
    seed = tf.constant([5, 6])  # the same anchors and RoIs every step: the decrease is the model's, not the draw's
    history = []
    for _ in range(5):  # eager: tracing the whole step takes longer than running these steps (~4 s each)
        with tf.GradientTape() as tape:
            terms = maskrcnn_training.compute_losses(model, images, labels, seed=seed)
        variables = model.trainable_variables
        gradients = tape.gradient(terms["loss"], variables)
        assert all(g is not None for g in gradients), [v.path for v, g in zip(variables, gradients) if g is None]
        optimizer.apply_gradients(zip(gradients, variables))
        history.append({k: float(v) for k, v in terms.items()})
    assert all(np.isfinite(h["loss"]) for h in history)
    losses = [round(h["loss"], 3) for h in history]
    # The proposals move with the RPN, so the loss is not monotonic: compare the last two steps with the first.
    assert np.mean(losses[-2:]) < 0.9 * losses[0], losses
    assert max(h["mask_loss"] for h in history[-2:]) < history[0]["mask_loss"], losses
