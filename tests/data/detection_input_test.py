"""The RetinaNet input pipeline: geometry of resize/crop/pad and flips, checked against drawn pixels."""

import numpy as np
import pytest
import tensorflow as tf

from spinenet_tf.data import detection_input as di
from spinenet_tf.detection import anchors as anchors_lib


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
