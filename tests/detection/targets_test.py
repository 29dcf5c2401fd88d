"""IoU, matching and RetinaNet target assignment: hand-built cases, graph mode, batches, Model Garden parity."""

import math

import numpy as np
import pytest
import tensorflow as tf

from spinenet_tf.detection import anchors as anchors_lib
from spinenet_tf.detection import matcher, targets

# Hand-built anchors; the comments give each one's IoU with the ground truth below.
ANCHORS = tf.constant([
    [0, 0, 10, 10],  # A0: IoU(g0) = 100 / 220 = 0.45 -> ignored with (0.5, 0.4), negative with MG's (0.5, 0.5)
    [0, 0, 10, 20],  # A1: IoU(g0) = 200 / 220 = 0.91 -> positive, class 3
    [0, 12, 10, 40],  # A2: IoU(g0) = 10 * (22 - 12) / (220 + 280 - 100) = 0.25 -> negative
    [100, 100, 110, 110],  # A3: equals g2, which is padding (class -1) -> negative
    [48, 48, 56, 56],  # A4: IoU(g1) = 16 / 64 = 0.25 but it is g1's best anchor -> force-matched, class 7
], tf.float32)
GT_BOXES = tf.constant([
    [0, 0, 10, 22],  # g0
    [50, 50, 54, 54],  # g1: small box, best IoU 0.25 < 0.4
    [100, 100, 110, 110],  # g2: padding by class
    [0, 0, 0, 0],  # g3: padding by box
], tf.float32)
GT_CLASSES = tf.constant([3, 7, -1, 2], tf.int32)


def test_iou_matrix_by_hand():
    a = tf.constant([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    b = tf.constant([[0.0, 5.0, 10.0, 15.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    # Overlap 10 x 5 = 50, union 100 + 100 - 50 = 150; disjoint -> 0; identical -> 1; a zero box -> 0, not NaN.
    np.testing.assert_allclose(matcher.iou_matrix(a, b).numpy(), [[1 / 3, 0, 1], [0, 0, 0]], rtol=1e-6)
    batched = matcher.iou_matrix(a, tf.stack([b, b[::-1]]))
    assert batched.shape == (2, 2, 3)
    np.testing.assert_allclose(batched[1, 0].numpy(), [1, 0, 1 / 3], rtol=1e-6)


def test_retinanet_rules_by_hand():
    t = targets.assign_targets(ANCHORS, GT_BOXES, GT_CLASSES, positive_threshold=0.5, negative_threshold=0.4)
    np.testing.assert_array_equal(t["positive"].numpy(), [False, True, False, False, True])
    np.testing.assert_array_equal(t["ignore"].numpy(), [True, False, False, False, False])
    np.testing.assert_array_equal(t["cls_targets"].numpy(), [-1, 3, -1, -1, 7])
    # A1 vs g0: centres (5, 10) and (5, 11), sizes 10 x 20 and 10 x 22 -> (0, 1 / 20, 0, log(22 / 20)).
    # A4 vs g1: same centre (52, 52), sizes 8 and 4 -> (0, 0, log(1 / 2), log(1 / 2)).
    expected = [[0, 0, 0, 0], [0, 0.05, 0, math.log(1.1)], [0, 0, 0, 0], [0, 0, 0, 0],
                [0, 0, math.log(0.5), math.log(0.5)]]
    np.testing.assert_allclose(t["box_targets"].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_model_garden_thresholds_have_no_ignored_band():
    t = targets.assign_targets(ANCHORS, GT_BOXES, GT_CLASSES, positive_threshold=0.5, negative_threshold=0.5)
    assert not t["ignore"].numpy().any()
    np.testing.assert_array_equal(t["positive"].numpy(), [False, True, False, False, True])


def test_without_low_quality_matches_the_small_box_is_lost():
    t = targets.assign_targets(ANCHORS, GT_BOXES, GT_CLASSES, allow_low_quality_matches=False)
    np.testing.assert_array_equal(t["cls_targets"].numpy(), [-1, 3, -1, -1, -1])


def test_anchor_equal_to_ground_truth_has_zero_box_target():
    t = targets.assign_targets(ANCHORS, ANCHORS[3:4], tf.constant([0]))  # A3 overlaps no other anchor
    np.testing.assert_array_equal(t["cls_targets"].numpy(), [-1, -1, -1, 0, -1])
    np.testing.assert_allclose(t["box_targets"].numpy()[3], [0, 0, 0, 0], atol=1e-7)


def test_force_match_tie_goes_to_the_first_box():
    # Both boxes have A4 as their best anchor (IoU 0.25 each); MG's force match keeps the lower index.
    gt = tf.constant([[50.0, 50.0, 54.0, 54.0], [49.0, 49.0, 53.0, 53.0]])
    t = targets.assign_targets(ANCHORS, gt, tf.constant([5, 6]))
    np.testing.assert_array_equal(t["cls_targets"].numpy(), [-1, -1, -1, -1, 5])


def test_no_ground_truth_means_all_negative():
    for boxes, classes in [(tf.zeros([0, 4]), tf.zeros([0], tf.int32)), (GT_BOXES[2:], GT_CLASSES[2:])]:
        t = targets.assign_targets(ANCHORS, boxes, classes)
        np.testing.assert_array_equal(t["cls_targets"].numpy(), [-1] * 5)
        assert not t["positive"].numpy().any() and not t["ignore"].numpy().any()
        np.testing.assert_array_equal(t["box_targets"].numpy(), np.zeros([5, 4]))


def test_batch_equals_images_one_by_one():
    other_boxes = tf.constant([[0, 0, 10, 10], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], tf.float32)
    other_classes = tf.constant([1, -1, -1, -1])
    batched = targets.assign_targets(ANCHORS, tf.stack([GT_BOXES, other_boxes]),
                                     tf.stack([GT_CLASSES, other_classes]))
    for i, (boxes, classes) in enumerate([(GT_BOXES, GT_CLASSES), (other_boxes, other_classes)]):
        single = targets.assign_targets(ANCHORS, boxes, classes)
        for key in single:
            np.testing.assert_array_equal(batched[key][i].numpy(), single[key].numpy())


def test_runs_inside_tf_data_with_dynamic_box_counts():
    examples = [(GT_BOXES.numpy(), GT_CLASSES.numpy()), (np.zeros([0, 4], np.float32), np.zeros([0], np.int32)),
                (GT_BOXES.numpy()[:1], GT_CLASSES.numpy()[:1])]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(examples), output_signature=(tf.TensorSpec([None, 4], tf.float32),
                                                  tf.TensorSpec([None], tf.int32)))
    dataset = dataset.map(lambda boxes, classes: targets.assign_targets(ANCHORS, boxes, classes)).batch(3)
    batch = next(iter(dataset))
    np.testing.assert_array_equal(batch["cls_targets"].numpy(), [[-1, 3, -1, -1, 7], [-1] * 5, [-1, 3, -1, -1, -1]])


def test_targets_by_level_matches_head_layout():
    image_size, num_anchors = (64, 96), 9
    anchors = anchors_lib.generate_anchors(3, 5, 3, [0.5, 1.0, 2.0], 3.0, image_size)
    t = targets.assign_targets(anchors, tf.constant([[[8.0, 8.0, 40.0, 60.0]]] * 2), tf.constant([[2]] * 2))
    per_level = targets.targets_by_level(t, anchors_lib.feature_sizes(3, 5, image_size), num_anchors)
    assert per_level["cls_targets"][3].shape == (2, 8, 12, 9)
    assert per_level["box_targets"][4].shape == (2, 4, 6, 36)
    assert per_level["positive"][5].dtype == tf.bool
    # Round trip through the head's flat layout.
    flat = anchors_lib.flatten_levels(per_level["box_targets"], 4)
    np.testing.assert_array_equal(flat.numpy(), t["box_targets"].numpy())


def test_rejects_wrong_box_layout():
    with pytest.raises(ValueError, match="gt_boxes must have a last dimension of 4"):
        targets.assign_targets(ANCHORS, tf.zeros([3, 5]), tf.zeros([3], tf.int32))
    with pytest.raises(ValueError, match="negative_threshold"):
        targets.assign_targets(ANCHORS, GT_BOXES, GT_CLASSES, positive_threshold=0.4, negative_threshold=0.5)


@pytest.mark.oracle
@pytest.mark.parametrize("negative_threshold", [0.5, 0.4])
def test_matches_model_garden_anchor_labeler(negative_threshold):
    from official.vision.ops import anchor
    image_size = (256, 320)
    mg_anchors = anchor.Anchor(3, 7, 3, [0.5, 1.0, 2.0], 3, image_size).multilevel_boxes
    rng = np.random.default_rng(0)
    yx = rng.uniform(0, 200, (12, 2))
    gt_boxes = tf.constant(np.concatenate([yx, yx + rng.uniform(4, 150, (12, 2))], axis=1), tf.float32)
    gt_classes = tf.constant(rng.integers(1, 10, 12), tf.int32)
    cls_mg, box_mg, _, cls_weights, box_weights = anchor.AnchorLabeler(0.5, negative_threshold).label_anchors(
        mg_anchors, gt_boxes, gt_classes[:, None])

    ours = targets.assign_targets(anchors_lib.generate_anchors(3, 7, 3, [0.5, 1.0, 2.0], 3, image_size),
                                  gt_boxes, gt_classes, negative_threshold=negative_threshold)
    positive = box_weights.numpy() > 0
    assert positive.sum() > 12  # several anchors per box: the comparison is not vacuous
    np.testing.assert_array_equal(ours["positive"].numpy(), positive)
    np.testing.assert_array_equal(ours["ignore"].numpy(), cls_weights.numpy() == 0)
    flat_cls = tf.concat([tf.reshape(v, [-1]) for v in cls_mg.values()], axis=0)
    np.testing.assert_array_equal(ours["cls_targets"].numpy(), flat_cls.numpy())
    # MG encodes a zero box for non-positives (weight 0); only positives carry a target.
    flat_box = tf.concat([tf.reshape(v, [-1, 4]) for v in box_mg.values()], axis=0).numpy()
    np.testing.assert_array_equal(ours["box_targets"].numpy()[positive], flat_box[positive])
    per_level = targets.targets_by_level(ours, anchors_lib.feature_sizes(3, 7, image_size), 9)
    for level, value in cls_mg.items():
        np.testing.assert_array_equal(per_level["cls_targets"][int(level)].numpy(), value.numpy())


@pytest.mark.oracle
def test_match_equals_model_garden_box_matcher_with_ties():
    # Coarse similarities make many ties and several columns sharing a best row, the cases where the forced
    # match's tie rules (first row per column, lowest column per row) decide the result.
    from official.vision.ops import box_matcher
    rng = np.random.default_rng(3)
    similarity = tf.constant(np.round(rng.random((3, 400, 30)) ** 6, 1), tf.float32)
    columns, indicators = box_matcher.BoxMatcher([0.3, 0.7], [-1, -2, 1], force_match_for_each_col=True)(similarity)
    matched, labels = matcher.match(similarity, positive_threshold=0.7, negative_threshold=0.3)
    expected = {-1: matcher.NEGATIVE, -2: matcher.IGNORE, 1: matcher.POSITIVE}
    np.testing.assert_array_equal(labels.numpy(), np.vectorize(expected.get)(indicators.numpy()))
    positive = labels.numpy() == matcher.POSITIVE
    assert positive.sum() > 30  # forced matches and threshold matches both occur
    np.testing.assert_array_equal(matched.numpy()[positive], columns.numpy()[positive])
