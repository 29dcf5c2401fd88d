"""RetinaNet losses: hand-derived values, masking, input validation, and parity with Model Garden's task."""

import math

import numpy as np
import pytest
import tensorflow as tf

from spinenet_tf.detection import anchors as anchors_lib
from spinenet_tf.detection import losses


def _targets(cls_targets, box_targets, positive, ignore):
    return {"cls_targets": tf.constant(cls_targets, tf.int32), "box_targets": tf.constant(box_targets, tf.float32),
            "positive": tf.constant(positive), "ignore": tf.constant(ignore)}


def test_focal_loss_by_hand():
    # Positive, logit 0: p = 0.5, CE = log 2, FL = alpha (1 - p)**gamma CE = 0.25 * 0.5**1.5 * log 2.
    # Negative, logit 20: p_t = 1 - sigmoid(20), CE = softplus(20) ~ 20, FL ~ 0.75 * 1 * 20 = 15 (no saturation:
    # a loss clipped at probability 1e-7 would give 0.75 * log(1e7) = 12.1).
    fl = losses.sigmoid_focal_loss(tf.constant([1.0, 0.0]), tf.constant([0.0, 20.0])).numpy()
    np.testing.assert_allclose(fl, [0.25 * 0.5**1.5 * math.log(2.0), 0.75 * 20.0], rtol=1e-5)


def test_retinanet_loss_by_hand():
    # 1 image, 3 anchors, 2 classes: anchor 0 positive (class 1), anchor 1 negative, anchor 2 ignored.
    t = _targets([[1, -1, -1]], [[[0.05, 1.0, 0.0, 0.0], [0.0] * 4, [0.0] * 4]],
                 [[True, False, False]], [[False, False, True]])
    cls_outputs = tf.constant([[[0.0, 0.0], [0.0, 0.0], [9.0, 9.0]]])  # ignored anchor's logits must not count
    box_outputs = tf.zeros([1, 3, 4])
    out = losses.retinanet_loss(t, cls_outputs, box_outputs)
    normalizer = 1 + 1  # one positive + 1
    # All logits 0 (p = 0.5, CE = log 2): the positive entry weighs alpha, the 3 negative entries 1 - alpha.
    cls = (0.25 + 3 * 0.75) * 0.5**1.5 * math.log(2.0) / normalizer
    # Huber(delta 0.1) on errors (0.05, 1, 0, 0): 0.5 * 0.05**2 = 0.00125 and 0.1 * 1 - 0.5 * 0.1**2 = 0.095,
    # averaged over the 4 coordinates.
    box = (0.00125 + 0.095) / 4 / normalizer
    np.testing.assert_allclose(out["cls_loss"].numpy(), cls, rtol=1e-5)
    np.testing.assert_allclose(out["box_loss"].numpy(), box, rtol=1e-5)
    np.testing.assert_allclose(out["loss"].numpy(), cls + 50 * box, rtol=1e-5)


def test_no_positives_is_finite():
    t = _targets([[-1, -1]], np.zeros([1, 2, 4]), [[False, False]], [[False, False]])
    out = losses.retinanet_loss(t, tf.zeros([1, 2, 3]), tf.ones([1, 2, 4]))
    # 6 negative entries at logit 0, normaliser 0 + 1; no box loss without positives.
    np.testing.assert_allclose(out["cls_loss"].numpy(), 6 * 0.75 * 0.5**1.5 * math.log(2.0), rtol=1e-5)
    assert out["box_loss"].numpy() == 0.0


def test_rejects_wrong_layout():
    t = _targets([[1]], np.zeros([1, 1, 4]), [[True]], [[False]])
    with pytest.raises(ValueError, match="box_outputs must have a last dimension of 4"):
        losses.retinanet_loss(t, tf.zeros([1, 1, 3]), tf.zeros([1, 1, 5]))
    bad = dict(t, box_targets=tf.zeros([1, 1, 2]))
    with pytest.raises(ValueError, match=r"box_targets'\] must have a last dimension of 4"):
        losses.retinanet_loss(bad, tf.zeros([1, 1, 3]), tf.zeros([1, 1, 4]))
    with pytest.raises(ValueError, match="flat"):
        losses.retinanet_loss(t, tf.zeros([1, 1, 1, 3]), tf.zeros([1, 1, 4]))
    with pytest.raises(ValueError, match="anchor counts differ"):
        losses.retinanet_loss(t, tf.zeros([1, 2, 3]), tf.zeros([1, 1, 4]))


def test_gradients_under_tf_function():
    t = _targets([[0, -1]], np.zeros([1, 2, 4]), [[True, False]], [[False, False]])
    logits, codes = tf.Variable(tf.fill([1, 2, 3], 30.0)), tf.Variable(tf.ones([1, 2, 4]))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = losses.retinanet_loss(t, logits, codes)["loss"]
        return tape.gradient(loss, [logits, codes])

    grad_logits, grad_codes = step()
    assert np.isfinite(grad_logits.numpy()).all() and np.abs(grad_logits.numpy()).max() > 0
    assert np.abs(grad_codes.numpy()[0, 1]).max() == 0  # the negative anchor gets no box gradient


@pytest.mark.oracle
def test_matches_model_garden_retinanet_task():
    from official.vision.configs import retinanet as retinanet_config
    from official.vision.tasks import retinanet as retinanet_task

    num_classes, batch, num_anchors = 6, 2, 9
    config = retinanet_config.retinanet_spinenet_coco()  # focal 0.25 / 1.5, Huber 0.1, box weight 50
    config.task.model.num_classes = num_classes
    task = retinanet_task.RetinaNetTask(config.task)

    rng = np.random.default_rng(0)
    sizes = anchors_lib.feature_sizes(3, 7, (128, 96))
    total = sum(h * w for h, w in sizes.values()) * num_anchors
    positive = rng.random((batch, total)) < 0.05
    ignore = ~positive & (rng.random((batch, total)) < 0.1)
    cls_targets = np.where(positive, rng.integers(0, num_classes, (batch, total)), -1)
    box_targets = np.where(positive[..., None], rng.normal(0, 0.2, (batch, total, 4)), 0.0)
    cls_outputs = {level: tf.constant(rng.normal(-2, 3, (batch, h, w, num_anchors * num_classes)), tf.float32)
                   for level, (h, w) in sizes.items()}
    box_outputs = {level: tf.constant(rng.normal(0, 0.2, (batch, h, w, num_anchors * 4)), tf.float32)
                   for level, (h, w) in sizes.items()}
    ours_targets = _targets(cls_targets, box_targets, positive, ignore)

    def per_level(x, dtype):  # MG's labels: {"3": [B, H, W, A * K], ...}
        return {str(level): v for level, v in anchors_lib.split_levels(tf.constant(x, dtype), sizes,
                                                                        num_anchors).items()}

    labels = {"cls_targets": per_level(cls_targets[..., None], tf.int32),
              "box_targets": per_level(box_targets, tf.float32),
              "cls_weights": tf.constant(~ignore, tf.float32), "box_weights": tf.constant(positive, tf.float32)}
    outputs = {"cls_outputs": {str(k): v for k, v in cls_outputs.items()},
               "box_outputs": {str(k): v for k, v in box_outputs.items()}}
    _, mg_cls, mg_box, mg_model = task.build_losses(outputs, labels)

    ours = losses.retinanet_loss(ours_targets, anchors_lib.flatten_levels(cls_outputs, num_classes),
                                 anchors_lib.flatten_levels(box_outputs, 4))
    np.testing.assert_allclose(ours["cls_loss"].numpy(), mg_cls.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours["box_loss"].numpy(), mg_box.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours["loss"].numpy(), mg_model.numpy(), rtol=1e-5)


@pytest.mark.oracle
def test_focal_term_matches_model_garden_focal_loss():
    from official.vision.losses import focal_loss
    import tf_keras

    rng = np.random.default_rng(1)
    labels = tf.constant(rng.random((2, 500, 7)) < 0.1, tf.float32)
    logits = tf.constant(rng.normal(0, 8, (2, 500, 7)), tf.float32)  # includes confident mistakes (|logit| > 16)
    mg = focal_loss.FocalLoss(alpha=0.25, gamma=1.5, reduction=tf_keras.losses.Reduction.NONE)
    np.testing.assert_allclose(losses.sigmoid_focal_loss(labels, logits).numpy(), mg.call(labels, logits).numpy(),
                               rtol=1e-5, atol=1e-7)
