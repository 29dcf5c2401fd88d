"""Tests of `spinenet_tf.detection.maskrcnn.targets`: mask targets, hand-checked and against Model Garden's
`MaskSampler` (tf-models-official 2.20.0) on the same inputs."""

import numpy as np
import pytest
import tensorflow as tf

from spinenet_tf.detection.maskrcnn import targets as maskrcnn_targets


def test_target_box_equal_to_the_mask_box_reproduces_the_mask():
    # Model Garden's convention: mask pixel k sits at coordinate k, sample i of S at (i + sample_offset) * M / S. At
    # offset 0 a 4x4 mask resampled at 4x4 inside its own box lands on its pixels; at 0.5 (the mask sampler's) each
    # sample averages a 2x2 neighbourhood.
    mask = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) / 15
    box = tf.constant([[[10.0, 20.0, 50.0, 60.0]]])
    out = maskrcnn_targets.crop_masks_in_boxes(mask, box, box, output_size=4, sample_offset=0.0).numpy()
    np.testing.assert_allclose(out, mask, atol=1e-5)
    out = maskrcnn_targets.crop_masks_in_boxes(mask, box, box, output_size=4).numpy()
    np.testing.assert_allclose(out[0, 0, 1, 1], (5 + 6 + 9 + 10) / 4 / 15, atol=1e-5)


def test_target_box_twice_the_mask_box_sees_zeros_around_it():
    mask = np.ones((1, 1, 8, 8), np.float32)
    box = tf.constant([[[0.0, 0.0, 8.0, 8.0]]])
    bigger = tf.constant([[[-4.0, -4.0, 12.0, 12.0]]])  # the mask fills the middle half
    out = maskrcnn_targets.crop_masks_in_boxes(mask, box, bigger, output_size=8, sample_offset=0.0).numpy()[0, 0]
    np.testing.assert_allclose(out[2:6, 2:6], 1.0, atol=1e-5)
    np.testing.assert_allclose(out[0], 0.0, atol=1e-5)
    np.testing.assert_allclose(out[:, 0], 0.0, atol=1e-5)


def test_foreground_rois_come_first_in_roi_order():
    rois = tf.constant([[[0, 0, 8, 8], [1, 1, 9, 9], [2, 2, 10, 10], [3, 3, 11, 11]]], tf.float32)
    classes = tf.constant([[0, 3, 0, 1]])
    indices = tf.constant([[-1, 1, -1, 0]])
    masks = tf.stack([tf.fill([1, 4, 4], 0.25), tf.fill([1, 4, 4], 0.75)], axis=1)
    picked, picked_classes, targets = maskrcnn_targets.sample_mask_targets(rois, rois, classes, indices, masks,
                                                                           num_sampled_masks=3, mask_target_size=4)
    np.testing.assert_array_equal(picked.numpy()[0, :2], rois.numpy()[0, [1, 3]])
    assert picked_classes.numpy().tolist() == [[3, 1, 0]]
    # RoI == its matched box: the targets are the constant masks of instances 1 and 0 (the last row and column blend
    # with the zero padding: Model Garden's half-pixel offset, see the first test).
    np.testing.assert_allclose(targets.numpy()[0, 0, :3, :3], 0.75, atol=1e-5)
    np.testing.assert_allclose(targets.numpy()[0, 1, :3, :3], 0.25, atol=1e-5)
    np.testing.assert_allclose(targets.numpy()[0, 1, 3, :3], 0.125, atol=1e-5)


def test_non_square_masks_are_refused():
    with pytest.raises(ValueError, match="masks must be square"):
        maskrcnn_targets.crop_masks_in_boxes(tf.zeros([1, 1, 4, 8]), tf.zeros([1, 1, 4]), tf.zeros([1, 1, 4]), 28)


@pytest.mark.oracle
def test_mask_targets_match_model_garden():
    from official.vision.modeling.layers import mask_sampler
    rng = np.random.default_rng(0)
    batch, num_rois, num_gt, size = 2, 40, 5, 32
    gt_corner = rng.uniform(0, 200, (batch, num_gt, 2))
    gt_boxes = np.concatenate([gt_corner, gt_corner + rng.uniform(10, 80, (batch, num_gt, 2))], -1)
    gt_masks = (rng.uniform(size=(batch, num_gt, size, size)) > 0.5).astype(np.float32)
    gt_indices = rng.integers(-1, num_gt, (batch, num_rois))
    matched_boxes = np.take_along_axis(gt_boxes, np.maximum(gt_indices, 0)[..., None], axis=1)
    classes = np.where(gt_indices >= 0, rng.integers(1, 10, (batch, num_rois)), 0)
    # RoIs around their matched boxes: shifted, grown and shrunk, some past the box.
    jitter = rng.uniform(-15, 15, (batch, num_rois, 4))
    rois = matched_boxes + jitter
    rois = np.concatenate([np.minimum(rois[..., :2], rois[..., 2:]), np.maximum(rois[..., :2], rois[..., 2:])], -1)
    args = [tf.constant(a.astype(np.float32)) for a in (rois, matched_boxes)] + [
        tf.constant(classes.astype(np.int32)), tf.constant(gt_indices.astype(np.int32)), tf.constant(gt_masks)]
    expected = mask_sampler._sample_and_crop_foreground_masks(*args, num_sampled_masks=16, mask_target_size=28)
    actual = maskrcnn_targets.sample_mask_targets(*args, num_sampled_masks=16, mask_target_size=28)
    np.testing.assert_allclose(actual[0].numpy(), expected[0].numpy())
    np.testing.assert_array_equal(actual[1].numpy(), expected[1].numpy())
    assert actual[2].shape == (batch, 16, 28, 28)
    np.testing.assert_allclose(actual[2].numpy(), expected[2].numpy(), atol=1e-5)
    assert 0.2 < float(tf.reduce_mean(actual[2])) < 0.8  # not comparing empty crops


# --- RoI sampling -----------------------------------------------------------------------------------------------

def _scene(seed, batch=2, num_rois=300, num_gt=6, padded=2):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 200, (batch, num_gt, 2))
    gt_boxes = np.concatenate([corner, corner + rng.uniform(20, 90, (batch, num_gt, 2))], -1)
    gt_classes = rng.integers(1, 10, (batch, num_gt))
    gt_boxes[:, num_gt - padded:], gt_classes[:, num_gt - padded:] = -1, -1  # MG's padding
    # Proposals: jittered copies of the boxes (many foreground) and random boxes (mostly background).
    near = np.repeat(gt_boxes[:, : num_gt - padded], num_rois // (2 * (num_gt - padded)) + 1, axis=1)
    near = near[:, : num_rois // 2] + rng.normal(0, 8, (batch, num_rois // 2, 4))
    far_corner = rng.uniform(0, 250, (batch, num_rois - num_rois // 2, 2))
    far = np.concatenate([far_corner, far_corner + rng.uniform(5, 60, far_corner.shape)], -1)
    rois = np.concatenate([near, far], axis=1)
    rois = np.concatenate([np.minimum(rois[..., :2], rois[..., 2:]), np.maximum(rois[..., :2], rois[..., 2:])], -1)
    return (tf.constant(rois.astype(np.float32)), tf.constant(gt_boxes.astype(np.float32)),
            tf.constant(gt_classes.astype(np.int32)))


@pytest.mark.oracle
def test_roi_matching_matches_model_garden():
    from official.vision.modeling.layers import roi_sampler
    rois, gt_boxes, gt_classes = _scene(1)
    # skip_subsampling: MG's matching alone, deterministic (its cascade heads' mode).
    sampler = roi_sampler.ROISampler(mix_gt_boxes=True, foreground_iou_threshold=0.5,
                                     background_iou_high_threshold=0.5, background_iou_low_threshold=0.0,
                                     skip_subsampling=True)
    expected_rois, expected_boxes, expected_classes, expected_indices = sampler(rois, gt_boxes, gt_classes)
    matched = maskrcnn_targets.match_rois(rois, gt_boxes, gt_classes)
    np.testing.assert_allclose(matched["rois"].numpy(), expected_rois.numpy())
    np.testing.assert_allclose(matched["matched_gt_boxes"].numpy(), expected_boxes.numpy())
    np.testing.assert_array_equal(matched["matched_gt_classes"].numpy(), expected_classes.numpy())
    np.testing.assert_array_equal(matched["matched_gt_indices"].numpy(), expected_indices.numpy())
    assert 20 < int(tf.reduce_sum(tf.cast(matched["foreground"], tf.int32))) < 400  # both kinds present


def test_sampled_rois_respect_the_quota_and_the_thresholds():
    rois, gt_boxes, gt_classes = _scene(2)
    sampled, boxes, classes, indices = maskrcnn_targets.sample_rois(rois, gt_boxes, gt_classes, num_sampled_rois=64,
                                                                    seed=tf.constant([1, 2]))
    assert sampled.shape == (2, 64, 4) and classes.shape == (2, 64)
    foreground = classes.numpy() > 0
    # The scene has more than 16 foreground RoIs per image: exactly the 25% quota, first.
    assert foreground.sum(axis=1).tolist() == [16, 16]
    assert np.all(foreground[:, :16])
    for b in range(2):
        iou = maskrcnn_targets.matcher.iou_matrix(sampled[b], gt_boxes[b]).numpy()[:, :4]
        assert np.all(iou[foreground[b]].max(axis=1) >= 0.5)
        assert np.all(iou[~foreground[b]].max(axis=1) < 0.5)
        np.testing.assert_allclose(boxes.numpy()[b][foreground[b]],
                                   gt_boxes.numpy()[b][indices.numpy()[b][foreground[b]]])
        assert np.all(indices.numpy()[b][~foreground[b]] == -1) and not boxes.numpy()[b][~foreground[b]].any()
    # The stateless seed makes the sample reproducible; another seed draws another one.
    again = maskrcnn_targets.sample_rois(rois, gt_boxes, gt_classes, num_sampled_rois=64, seed=tf.constant([1, 2]))
    other = maskrcnn_targets.sample_rois(rois, gt_boxes, gt_classes, num_sampled_rois=64, seed=tf.constant([3, 4]))
    np.testing.assert_array_equal(again[0].numpy(), sampled.numpy())
    assert not np.array_equal(other[0].numpy(), sampled.numpy())


def test_random_subset_is_the_highest_noise_candidates_ties_to_the_lower_index():
    # Coarse noise makes ties; the counts differ per row and exceed the candidates in one row.
    rng = np.random.default_rng(5)
    candidates = rng.random((3, 500)) < np.array([[0.5], [0.05], [0.9]])
    noise = np.round(rng.random((3, 500)), 2).astype(np.float32)
    counts = np.array([[40], [60], [7]], np.int32)
    kept = maskrcnn_targets._first_by_noise(tf.constant(candidates), tf.constant(noise), tf.constant(counts),
                                            64).numpy()
    for row in range(3):
        order = np.argsort(-np.where(candidates[row], noise[row], -1.0), kind="stable")
        expected = np.zeros(500, bool)
        expected[order[:counts[row, 0]]] = True
        np.testing.assert_array_equal(kept[row], expected & candidates[row])
    assert kept.sum(axis=1).tolist() == [40, candidates[1].sum(), 7]


# --- RPN anchor labels ------------------------------------------------------------------------------------------

@pytest.mark.oracle
def test_rpn_targets_match_model_garden():
    from official.vision.ops import anchor
    from spinenet_tf.detection import anchors as anchors_lib

    size = (128, 256)
    anchors = anchors_lib.generate_anchors(3, 7, 3, [0.5, 1.0, 2.0], 3.0, size)
    flat = anchors_lib.concat_anchors(anchors)
    _, gt_boxes, gt_classes = _scene(3, batch=1, num_gt=6, padded=2)
    gt_boxes = gt_boxes * 0.4  # inside the 128x256 image (an empty, clipped box is dropped by us, not by MG's labeler)
    ours = maskrcnn_targets.rpn_targets(flat, gt_boxes, gt_classes, seed=tf.constant([0, 1]))
    # MG labels one image; its anchors are {level: [H, W, A * 4]} and its ground truth unpadded.
    mg_anchors = {str(level): tf.reshape(a, [size[0] // 2**level, size[1] // 2**level, 36])
                  for level, a in anchors.items()}
    score_targets, box_targets = anchor.RpnAnchorLabeler().label_anchors(mg_anchors, gt_boxes[0, :4],
                                                                         gt_classes[0, :4, None])
    expected_boxes = tf.concat([tf.reshape(box_targets[str(level)], [-1, 4]) for level in range(3, 8)], 0).numpy()
    expected_scores = tf.concat([tf.reshape(score_targets[str(level)], [-1]) for level in range(3, 8)], 0).numpy()
    np.testing.assert_allclose(ours["box_targets"].numpy()[0], expected_boxes, atol=1e-5)
    # The samples are random in both: same quotas, drawn from the same positives and negatives.
    scores = ours["score_targets"].numpy()[0]
    positives = np.abs(expected_boxes).max(axis=1) > 1e-6
    assert positives.sum() > 0
    assert (scores == 1).sum() == (expected_scores == 1).sum() == min(positives.sum(), 128)
    assert (scores >= 0).sum() == (expected_scores >= 0).sum() == 256
    assert np.all(positives[scores == 1])
    iou = maskrcnn_targets.matcher.iou_matrix(flat, gt_boxes[0, :4]).numpy().max(axis=1)
    assert np.all(iou[scores == 0] < 0.3) and np.all(iou[expected_scores == 0] < 0.3)
