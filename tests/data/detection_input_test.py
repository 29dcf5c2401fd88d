"""The RetinaNet / Mask R-CNN input pipeline: geometry of resize/crop/pad and flips, checked against drawn pixels;
instance masks cropped to their augmented boxes land on their instances' pixels (painted in the image, so the
golden is the image path, not the mask path), crowd instances train nothing but are evaluated."""

import numpy as np
import pytest
import tensorflow as tf

from spinenet_tf.data import builtin_shapes as bs
from spinenet_tf.data import detection_input as di
from spinenet_tf.data import sources
from spinenet_tf.detection import anchors as anchors_lib
from spinenet_tf.detection import mask_ops
from spinenet_tf.detection.maskrcnn import targets as maskrcnn_targets


def _example(height, width, box, label=2):
    """An image with one pure-red rectangle at `box` (ymin, xmin, ymax, xmax pixels) on grey."""
    image = np.full((height, width, 3), 128, np.uint8)
    ymin, xmin, ymax, xmax = box
    image[ymin:ymax, xmin:xmax] = (255, 0, 0)
    bbox = np.array([[ymin / height, xmin / width, ymax / height, xmax / width]], np.float32)
    return {"image": tf.constant(image), "image/id": tf.constant(7, tf.int64),
            "objects": {"bbox": tf.constant(bbox), "label": tf.constant([label], tf.int64),
                        "is_crowd": tf.constant([False])}}


def _red_extent(image):
    red = (image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60)
    ys, xs = np.nonzero(red)
    return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float32)


def test_resize_keeps_aspect_and_pads_bottom_right():
    image = tf.ones([200, 100, 3], tf.uint8) * 255
    padded, info = di.resize_and_pad(image, (256, 256))
    # scale = min(256 / 200, 256 / 100) = 1.28 -> 256 x 128; the right half is padding.
    np.testing.assert_allclose(info.numpy(), [[200, 100], [256, 128], [1.28, 1.28], [0, 0]])
    assert padded.shape == (256, 256, 3)
    assert float(tf.reduce_min(padded[:, :128])) > 250 and float(tf.reduce_max(padded[:, 128:])) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_augmented_boxes_follow_the_pixels(seed):
    tf.random.set_seed(seed)
    example = _example(120, 160, (30, 20, 90, 70))
    config = di.DetectionInputConfig((128, 128), max_instances=4, aug_scale_min=0.8, aug_scale_max=1.6)
    parser = di.DetectionInput(config, anchors_lib.concat_anchors(anchors_lib.generate_anchors(3, 7, 3, [0.5, 1, 2],
                                                                                                 3, (128, 128))))
    image, boxes, classes = (t.numpy() for t in parser.augment(example))
    assert list(classes) == [2, -1, -1, -1]
    # Bilinear resizing blurs the edges by about a pixel; the box must hug the red pixels within that.
    np.testing.assert_allclose(boxes[0], _red_extent(image), atol=2.0)
    assert not boxes[1:].any()


def test_eval_info_maps_boxes_back_to_the_original_image():
    example = _example(300, 150, (60, 30, 240, 120))
    config = di.DetectionInputConfig((128, 128))
    parser = di.DetectionInput(config, np.zeros((1, 4), np.float32))
    image, labels = parser.eval_fn(example)
    info = labels["image_info"].numpy()
    model_box = _red_extent((image.numpy() * di.STDDEV_RGB + di.MEAN_RGB))
    back = (model_box + np.tile(info[3], 2)) / np.tile(info[2], 2)
    np.testing.assert_allclose(back, [60, 30, 240, 120], atol=3.0)
    np.testing.assert_allclose(labels["gt_boxes"].numpy()[0], [60, 30, 240, 120], atol=1e-3)
    assert int(labels["image_id"]) == 7


def test_train_fn_targets_match_assign_targets_on_a_fixed_geometry():
    example = _example(128, 128, (16, 16, 80, 80), label=1)
    anchors = anchors_lib.concat_anchors(anchors_lib.generate_anchors(3, 7, 3, [0.5, 1, 2], 3, (128, 128)))
    config = di.DetectionInputConfig((128, 128), max_instances=3, aug_scale_min=1.0, aug_scale_max=1.0,
                                     horizontal_flip=False)
    image, targets = di.DetectionInput(config, anchors).train_fn(example)
    positives = targets["positive"].numpy()
    assert positives.any()
    assert set(targets["cls_targets"].numpy()[positives]) == {1}
    # Without jitter and flip the image is unchanged: the normalised red pixels are where they were.
    np.testing.assert_allclose(_red_extent(image.numpy() * di.STDDEV_RGB + di.MEAN_RGB), [16, 16, 80, 80])


# === Instance masks ===

COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)], np.uint8)


def _mask_example(index=3, size=128, crowd=()):
    """Generator masks (disjoint, their tight boxes) painted in pure colours on grey: the image says where each
    instance is, independently of the mask path."""
    generated = bs.generate_example(index, "validation", size)
    masks = generated["masks"]
    image = np.full((size, size, 3), 128, np.uint8)
    for k, mask in enumerate(masks):
        image[mask.astype(bool)] = COLOURS[k]
    is_crowd = np.isin(np.arange(len(masks)), crowd)
    return generated, {"image": tf.constant(image), "image/id": tf.constant(generated["image_id"], tf.int64),
                       "objects": {"bbox": tf.constant(generated["boxes"] / size),
                                   "label": tf.constant(generated["classes"], tf.int64),
                                   "is_crowd": tf.constant(is_crowd),
                                   "segmentation": tf.constant(masks[..., None] * 255)}}


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float32)


def _assert_masks_follow_the_pixels(image, boxes, masks, num_instances, size):
    """Each non-padding instance: its pasted mask covers its colour in the image, and its tight box is its box."""
    pasted = mask_ops.paste_masks(masks[:num_instances], boxes[:num_instances], size, size)
    for k in range(num_instances):
        colour = np.abs(image.astype(float) - COLOURS[k]).max(axis=-1) < 60   # edges blur: about half-way
        assert _iou(pasted[k], colour) > 0.85, k
        np.testing.assert_allclose(_tight_box(pasted[k]), boxes[k], atol=1.0, err_msg=k)
    assert not masks[num_instances:].any()


def _mask_parser(**settings):
    config = di.DetectionInputConfig((128, 128), max_instances=8, include_masks=True, **settings)
    return di.DetectionInput(config, np.zeros((1, 4), np.float32))


@pytest.mark.parametrize("seed", range(6))
def test_augmented_masks_follow_the_boxes_and_pixels(seed):
    generated, example = _mask_example()
    tf.random.set_seed(seed)
    image, boxes, classes, masks = (t.numpy() for t in _mask_parser(aug_scale_min=0.8, aug_scale_max=1.6)
                                    .augment(example))
    assert masks.shape == (8, 112, 112) and masks.dtype == np.float32 and 0 <= masks.min() <= masks.max() <= 1
    count = int(np.sum(classes >= 0))
    assert count >= 1
    _assert_masks_follow_the_pixels(image, boxes, masks, count, 128)


def test_flipped_and_unflipped_masks_both_follow_the_pixels():
    generated, example = _mask_example(index=5)
    parser = _mask_parser(aug_scale_min=1.0, aug_scale_max=1.0)
    original = example["image"].numpy().astype(np.float32)
    seen = set()
    for seed in range(20):
        tf.random.set_seed(seed)
        image, boxes, classes, masks = (t.numpy() for t in parser.augment(example))
        flipped = bool(np.array_equal(image, original[:, ::-1]))
        assert flipped or np.array_equal(image, original)
        _assert_masks_follow_the_pixels(image, boxes, masks, len(generated["classes"]), 128)
        seen.add(flipped)
        if len(seen) == 2:
            break
    assert seen == {False, True}


def test_crowd_masks_are_left_out_of_training_and_kept_for_evaluation():
    generated, example = _mask_example(index=3, crowd=(0,))
    assert len(generated["classes"]) >= 2
    parser = _mask_parser(aug_scale_min=1.0, aug_scale_max=1.0, horizontal_flip=False, label_offset=1)
    image, labels = parser.instance_train_fn(example)
    labels = {key: value.numpy() for key, value in labels.items()}
    count = len(generated["classes"]) - 1
    np.testing.assert_array_equal(labels["gt_classes"], [*(generated["classes"][1:] + 1), *[-1] * (8 - count)])
    np.testing.assert_allclose(labels["gt_boxes"][:count], generated["boxes"][1:])
    assert np.all(labels["gt_boxes"][count:] == -1.0) and not labels["gt_masks"][count:].any()
    np.testing.assert_allclose(labels["image_info"], [[128, 128], [128, 128], [1, 1], [0, 0]])
    pasted = mask_ops.paste_masks(labels["gt_masks"][:count], labels["gt_boxes"][:count], 128, 128)
    for truth, back in zip(generated["masks"][1:], pasted):
        assert _iou(truth, back) > 0.99
    # Evaluation keeps the crowd instance, flagged, with its mask in original-image pixels.
    _, eval_labels = parser.eval_fn(example)
    everything = len(generated["classes"])
    np.testing.assert_array_equal(eval_labels["gt_is_crowd"].numpy()[:everything], [1] + [0] * (everything - 1))
    pasted = mask_ops.paste_masks(eval_labels["gt_masks"].numpy()[:everything],
                                  eval_labels["gt_boxes"].numpy()[:everything], 128, 128)
    for truth, back in zip(generated["masks"], pasted):
        assert _iou(truth, back) > 0.99


def test_boxes_only_parsing_ignores_masks_and_is_unchanged():
    _, example = _mask_example()
    settings = {"image_size": (128, 128), "max_instances": 8, "aug_scale_min": 0.8, "aug_scale_max": 1.6}
    anchors = np.zeros((1, 4), np.float32)
    boxes_only = di.DetectionInput(di.DetectionInputConfig(**settings), anchors)
    with_masks = di.DetectionInput(di.DetectionInputConfig(**settings, include_masks=True), anchors)
    without = dict(example, objects={k: v for k, v in example["objects"].items() if k != "segmentation"})
    for seed in range(3):
        results = []
        for parser, data in [(boxes_only, example), (boxes_only, without), (with_masks, example)]:
            tf.random.set_seed(seed)
            results.append([t.numpy() for t in parser.augment(data)])
        assert len(results[0]) == len(results[1]) == 3 and len(results[2]) == 4
        for a, b, c in zip(*results):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)


def test_masks_asked_for_but_missing_or_not_configured_are_one_line_errors():
    _, example = _mask_example()
    without = dict(example, objects={k: v for k, v in example["objects"].items() if k != "segmentation"})
    with pytest.raises(ValueError, match="the examples have no objects/segmentation; load the source with task "
                                         "'instance_segmentation'"):
        _mask_parser().augment(without)
    with pytest.raises(ValueError, match=r"instance_train_fn needs DetectionInputConfig\(include_masks=True\)"):
        di.DetectionInput(di.DetectionInputConfig((128, 128)), np.zeros((1, 4), np.float32)).instance_train_fn(example)


def test_instance_train_fn_builds_the_rpn_targets_of_its_real_boxes():
    # Per example against the real boxes only: the same targets as `rpn_targets` on the padded labels (the
    # padding never matches), and the sample's quota of 256 anchors, positives among the matched ones.
    anchors = anchors_lib.concat_anchors(anchors_lib.generate_anchors(3, 7, 3, [0.5, 1.0, 2.0], 3.0, (128, 128)))
    config = di.DetectionInputConfig((128, 128), max_instances=8, include_masks=True, label_offset=1,
                                     aug_scale_min=1.0, aug_scale_max=1.0, horizontal_flip=False)
    _, example = _mask_example(index=3)
    _, labels = di.DetectionInput(config, anchors).instance_train_fn(example)
    assert labels["rpn_score_targets"].shape == (len(anchors),) and labels["rpn_box_targets"].shape == (len(anchors), 4)
    expected = maskrcnn_targets.rpn_targets(anchors, labels["gt_boxes"][None], labels["gt_classes"][None])
    np.testing.assert_array_equal(labels["rpn_box_targets"].numpy(), expected["box_targets"][0].numpy())
    scores = labels["rpn_score_targets"].numpy()
    matched = np.abs(expected["box_targets"][0].numpy()).max(axis=1) > 0
    assert (scores >= 0).sum() == 256 and 0 < (scores == 1).sum() <= 128
    assert np.all(matched[scores == 1]) and not np.any(matched[scores == 0])


def test_instance_train_fn_batches_from_a_loaded_source():
    # The real path: builtin:shapes loaded with masks, mapped in tf.data, batched. The augmentation draws from the
    # global generator, which earlier tests in the same process advance (a scale-up crop can cut every shape out of
    # an image): seeded here, so each image keeps an instance whatever ran before.
    tf.random.set_seed(0)
    loaded = sources.load(sources.parse("builtin:shapes:validation[:4]"), "instance_segmentation", training=True,
                          seed=0)
    parser = _mask_parser(label_offset=1)
    images, labels = next(iter(loaded.dataset.map(parser.instance_train_fn).batch(4)))
    assert images.shape == (4, 128, 128, 3)
    assert labels["gt_masks"].shape == (4, 8, 112, 112) and labels["gt_boxes"].shape == (4, 8, 4)
    assert labels["gt_classes"].dtype == tf.int32 and labels["image_info"].shape == (4, 4, 2)
    valid = labels["gt_classes"].numpy() >= 1
    assert valid.any(axis=1).all()
    # Every real instance has mask pixels, padding none.
    mask_area = labels["gt_masks"].numpy().sum(axis=(2, 3))
    assert np.all(mask_area[valid] > 0) and np.all(mask_area[~valid] == 0)
