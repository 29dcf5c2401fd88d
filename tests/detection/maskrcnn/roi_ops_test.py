"""Tests of `spinenet_tf.detection.maskrcnn.roi_ops`: proposals, level assignment, RoIAlign and second-stage detections,
against hand-computed cases and against Model Garden's ops (tf-models-official 2.20.0) on the same inputs."""

import math

import numpy as np
import pytest
import tensorflow as tf

from spinenet_tf.detection import anchors as anchors_lib
from spinenet_tf.detection.maskrcnn import roi_ops

SIZE = (128, 256)  # non-square, so a height / width mix-up shows
BATCH = 2


def _levels(rng, channels, scale=1.0):
    return {level: tf.constant(scale * rng.standard_normal((BATCH, SIZE[0] // 2**level, SIZE[1] // 2**level,
                                                            channels)).astype(np.float32))
            for level in range(3, 8)}


@pytest.fixture(scope="module")
def rpn_outputs():
    rng = np.random.default_rng(0)
    anchors = anchors_lib.generate_anchors(3, 7, 3, [0.5, 1.0, 2.0], 3.0, SIZE)
    return _levels(rng, 9), _levels(rng, 36, scale=0.3), anchors


# --- proposals --------------------------------------------------------------------------------------------------

def test_proposals_are_clipped_sorted_and_suppressed(rpn_outputs):
    scores, boxes, anchors = rpn_outputs
    rois, roi_scores = roi_ops.generate_proposals(scores, boxes, anchors, SIZE, pre_nms_top_k=300, num_proposals=200)
    rois, roi_scores = rois.numpy(), roi_scores.numpy()
    assert rois.shape == (BATCH, 200, 4) and roi_scores.shape == (BATCH, 200)
    assert rois.min() >= 0 and rois[..., [0, 2]].max() <= SIZE[0] and rois[..., [1, 3]].max() <= SIZE[1]
    assert np.all(np.diff(roi_scores, axis=1) <= 0) and np.all(roi_scores > 0)
    # Without NMS the same call keeps more overlapping boxes: the NMS did suppress some.
    unsuppressed, _ = roi_ops.generate_proposals(scores, boxes, anchors, SIZE, pre_nms_top_k=300, num_proposals=200,
                                                 nms_iou_threshold=0.0)
    assert not np.array_equal(unsuppressed.numpy(), rois)


@pytest.mark.oracle
def test_proposals_match_model_garden(rpn_outputs):
    from official.vision.modeling.layers import roi_generator
    scores, boxes, anchors = rpn_outputs
    mg_anchors = {str(level): tf.tile(a[None], [BATCH, 1, 1]) for level, a in anchors.items()}
    for settings in (dict(pre_nms_top_k=300, num_proposals=200), dict(pre_nms_top_k=1000, num_proposals=1000),
                     dict(pre_nms_top_k=50, num_proposals=100, nms_iou_threshold=0.0)):
        expected_rois, expected_scores = roi_generator._multilevel_propose_rois(
            {str(k): v for k, v in boxes.items()}, {str(k): v for k, v in scores.items()}, mg_anchors,
            tf.constant([SIZE] * BATCH, tf.float32), **settings)
        rois, roi_scores = roi_ops.generate_proposals(scores, boxes, anchors, SIZE, **settings)
        np.testing.assert_allclose(rois.numpy(), expected_rois.numpy(), rtol=1e-6, atol=1e-4, err_msg=str(settings))
        np.testing.assert_allclose(roi_scores.numpy(), expected_scores.numpy(), rtol=1e-6, err_msg=str(settings))


def test_nms_suppresses_at_iou_equal_to_the_threshold():
    # Three anchors at level 3 of a 16x16 feature map would be too many to hand-check; one location of level 7
    # (1x1 at 128x128) with 3 anchors, codes 0: the proposals are the anchors, clipped.
    anchors = {7: tf.constant([[0, 0, 10, 10], [0, 0, 10, 5], [0, 20, 10, 30]], tf.float32)}
    scores = {7: tf.constant([[[[3.0, 2.0, 1.0]]]])}
    boxes = {7: tf.zeros([1, 1, 1, 12])}
    # IoU of the first two = 50 / 100 = 0.5 exactly: suppressed at threshold 0.5 (MG: IoU >= threshold).
    rois, roi_scores = roi_ops.generate_proposals(scores, boxes, anchors, (128, 128), nms_iou_threshold=0.5)
    np.testing.assert_allclose(rois.numpy()[0], [[0, 0, 10, 10], [0, 20, 10, 30], [0, 0, 0, 0]])
    np.testing.assert_allclose(roi_scores.numpy()[0], [1 / (1 + math.exp(-3)), 1 / (1 + math.exp(-1)), 0],
                               rtol=1e-6)


# --- RoIAlign ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("box, level", [
    ([0, 0, 224, 224], 4),      # FPN's canonical box
    ([0, 0, 111, 111], 3),      # just under half the canonical size
    ([0, 0, 112, 112], 3),      # log2(112 / 224) = -1 exactly -> level 3
    ([0, 0, 448, 448], 5),
    ([0, 0, 4000, 4000], 7),    # clipped to the top level
    ([5, 5, 5, 5], 3),          # zero area: log(0) = -inf -> the bottom level, not an overflow
])
def test_level_assignment(box, level):
    assert int(roi_ops.assign_levels(tf.constant([box], tf.float32), 3, 7)[0]) == level


def test_roi_align_of_a_linear_ramp_samples_bin_centres():
    # Feature value = x coordinate of the P3 cell, so a bilinear sample at x returns x itself.
    features = {level: tf.tile(tf.range(SIZE[1] // 2**level, dtype=tf.float32)[None, None, :, None],
                               [1, SIZE[0] // 2**level, 1, 1]) for level in range(3, 8)}
    box = tf.constant([[[16.0, 40.0, 48.0, 88.0]]])  # sqrt(32 * 48) < 112 -> level 3, stride 8
    out = roi_ops.multilevel_roi_align(features, box, output_size=4).numpy()
    assert out.shape == (1, 1, 4, 4, 1)
    # Bin centres in P3 pixels: x0 / 8 + (i + 0.5) * (w / 8) / 4 = 5 + (i + 0.5) * 1.5.
    np.testing.assert_allclose(out[0, 0, 0, :, 0], 5 + (np.arange(4) + 0.5) * 1.5, rtol=1e-6)
    np.testing.assert_allclose(out[0, 0, :, 0, 0], np.full(4, 5.75), rtol=1e-6)


@pytest.mark.oracle
def test_roi_align_matches_model_garden(rpn_outputs):
    from official.vision.ops import spatial_transform_ops
    features = _levels(np.random.default_rng(1), 8)
    rois, _ = roi_ops.generate_proposals(*rpn_outputs, SIZE, num_proposals=100)
    # Proposals plus boxes of levels 4, 5, 6, past the image, of zero size and very thin.
    odd = np.array([[[0, 0, 200, 256], [-10, -10, 500, 600], [-400, -400, 600, 700], [0, 0, 0, 0], [5, 5, 6, 300],
                     [120, 250, 128, 256]]] * BATCH, np.float32)
    boxes = tf.constant(np.concatenate([rois.numpy(), odd], axis=1))
    assert set(roi_ops.assign_levels(boxes, 3, 7).numpy().ravel()) == {3, 4, 5, 6}
    for size in (7, 14):
        expected = spatial_transform_ops.multilevel_crop_and_resize({str(k): v for k, v in features.items()}, boxes,
                                                                    output_size=size).numpy()
        actual = roi_ops.multilevel_roi_align(features, boxes, output_size=size).numpy()
        # MG sums the four weighted neighbours as 4 * avg_pool: float32 rounding, relative to the feature scale.
        np.testing.assert_allclose(actual, expected, atol=1e-5 * np.abs(expected).max(), rtol=1e-5)


# --- second-stage detections ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def head_outputs(rpn_outputs):
    rng = np.random.default_rng(2)
    rois, _ = roi_ops.generate_proposals(*rpn_outputs, SIZE, num_proposals=50)
    classes = tf.constant(3.0 * rng.standard_normal((BATCH, 50, 5)).astype(np.float32))
    codes = tf.constant(rng.standard_normal((BATCH, 50, 20)).astype(np.float32))
    return classes, codes, rois


@pytest.mark.oracle
@pytest.mark.parametrize("score_threshold", [0.05, 0.3])
def test_detections_match_model_garden(head_outputs, score_threshold):
    from official.vision.modeling.layers import detection_generator
    classes, codes, rois = head_outputs
    generator = detection_generator.DetectionGenerator(pre_nms_score_threshold=score_threshold, max_num_detections=20)
    expected = generator(codes, classes, rois, tf.constant([SIZE] * BATCH, tf.float32), [10.0, 10.0, 5.0, 5.0])
    actual = roi_ops.generate_detections(classes, codes, rois, SIZE, score_threshold=score_threshold,
                                         max_detections=20)
    count = actual["num_detections"].numpy()
    np.testing.assert_array_equal(count, expected["num_detections"].numpy())
    assert count.min() > 0
    for b in range(BATCH):
        n = count[b]
        np.testing.assert_allclose(actual["boxes"][b, :n], expected["detection_boxes"][b, :n], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(actual["scores"][b, :n], expected["detection_scores"][b, :n], rtol=1e-6)
        np.testing.assert_array_equal(actual["classes"][b, :n], expected["detection_classes"][b, :n])


def test_detections_skip_the_background_and_pad_with_zeros():
    rois = tf.constant([[[0, 0, 10, 10], [50, 50, 60, 60]]], tf.float32)
    # RoI 0 is background; RoI 1 is class 2 (softmax ~0.98).
    logits = tf.constant([[[9.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])
    out = roi_ops.generate_detections(logits, tf.zeros([1, 2, 12]), rois, (128, 128), max_detections=4)
    assert out["num_detections"].numpy().tolist() == [1]
    np.testing.assert_allclose(out["boxes"].numpy()[0], [[50, 50, 60, 60], [0] * 4, [0] * 4, [0] * 4])
    assert out["classes"].numpy()[0].tolist() == [2, 0, 0, 0]
    np.testing.assert_allclose(out["scores"].numpy()[0, 0], math.exp(5) / (2 + math.exp(5)), rtol=1e-6)
    # Nothing scores above 1: only padding, all zeros.
    none = roi_ops.generate_detections(logits, tf.zeros([1, 2, 12]), rois, (128, 128), max_detections=4,
                                       score_threshold=1.0)
    assert none["num_detections"].numpy().tolist() == [0]
    assert not none["boxes"].numpy().any() and not none["classes"].numpy().any()


def test_unequal_train_and_test_proposal_counts_are_rejected():
    with pytest.raises(ValueError, match="num_proposals=500 and test_num_proposals=1000 must be equal"):
        roi_ops.ProposalGenerator(anchors_lib.AnchorGenerator().get_config(), (128, 128), num_proposals=500)
