"""The classification input pipeline: Inception-style crops within their ranges, the centre crop of evaluation,
flips, determinism under a seed, and Model Garden's preprocessing as the oracle for the evaluation path."""

import numpy as np
import pytest
import tensorflow as tf

from spinenet_tf.data import classification_input as ci
from spinenet_tf.data import detection_input as di


def _coordinate_image(height, width):
    """uint8 [H, W, 3]: channel 0 = row // 256, 1 = row % 256 ... enough to recover every pixel's position."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows % 256, cols % 256, (rows // 256) * 16 + cols // 256], axis=-1).astype(np.uint8)


def _position(pixel):
    row = int(pixel[0]) + 256 * (int(pixel[2]) // 16)
    col = int(pixel[1]) + 256 * (int(pixel[2]) % 16)
    return row, col


def _normalised(value):
    return (np.full(3, value, np.float32) - np.array(di.MEAN_RGB, np.float32)) / np.array(di.STDDEV_RGB, np.float32)


def test_eval_crops_the_centre_square_of_seven_eighths_of_the_shorter_side():
    # 200 x 160: the crop side is 0.875 * 160 = 140, at offset ((200 - 140) / 2, (160 - 140) / 2) = (30, 10).
    image = np.zeros((200, 160, 3), np.uint8)
    image[30:170, 10:150] = 200
    parser = ci.ClassificationInput((64, 96))
    output, label = parser.eval_fn({"image": tf.constant(image), "label": tf.constant(4, tf.int64)})
    assert output.shape == (64, 96, 3) and output.dtype == tf.float32 and label.dtype == tf.int64 and label == 4
    np.testing.assert_allclose(output.numpy(), np.broadcast_to(_normalised(200), (64, 96, 3)), rtol=1e-6)
    # One pixel more on any side would bring in the zeros.
    assert ci.center_crop(tf.constant(image)).shape == (140, 140, 3)


@pytest.mark.oracle
def test_eval_matches_model_garden_preprocessing():
    from official.vision.ops import preprocess_ops

    image = tf.constant(np.random.default_rng(0).integers(0, 256, (181, 243, 3)), tf.uint8)
    ours, _ = ci.ClassificationInput((96, 128)).eval_fn({"image": image, "label": tf.constant(0, tf.int64)})
    # Model Garden's Parser._parse_eval_image on a decoded image: centre crop, bilinear resize, normalise.
    theirs = tf.image.resize(preprocess_ops.center_crop_image(image), (96, 128), method="bilinear")
    theirs = preprocess_ops.normalize_image(theirs, offset=preprocess_ops.MEAN_RGB, scale=preprocess_ops.STDDEV_RGB)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)
    assert ci.CENTER_CROP_FRACTION == preprocess_ops.CENTER_CROP_FRACTION


def test_random_crops_are_windows_within_the_inception_ranges():
    height, width = 300, 400
    image = tf.constant(_coordinate_image(height, width))
    parser = ci.ClassificationInput((64, 64))
    areas, aspects = [], []
    for k in range(60):
        crop = parser.random_crop(image, seed=tf.constant([k, 1])).numpy()
        h, w = crop.shape[:2]
        top, left = _position(crop[0, 0])
        # A contiguous window of the original image, at the position its first pixel says.
        np.testing.assert_array_equal(crop, image.numpy()[top:top + h, left:left + w])
        areas.append(h * w / (height * width))
        aspects.append(w / h)
    # area 8-100% and width / height 3/4-4/3 (MG random_crop_image), up to pixel rounding.
    assert min(areas) >= 0.08 - 0.01 and max(areas) <= 1.0
    assert min(aspects) >= 0.75 * 0.97 and max(aspects) <= 4 / 3 * 1.03
    assert max(areas) - min(areas) > 0.4     # the range is used, not one size


def test_crop_falls_back_to_the_centre_crop_when_no_window_fits():
    # A 400 x 12 strip has no window of aspect 3/4-4/3 covering 50% of it: every attempt fails.
    image = tf.constant(_coordinate_image(400, 12))
    parser = ci.ClassificationInput(32, crop_area_range=(0.5, 1.0))
    crop = parser.random_crop(image, seed=tf.constant([3, 4])).numpy()
    np.testing.assert_array_equal(crop, ci.center_crop(image).numpy())
    assert crop.shape == (10, 10, 3)   # int(0.875 * 12)


def test_train_is_crop_then_flip_then_resize_then_normalise():
    image = tf.constant(_coordinate_image(120, 160))
    example = {"image": image, "label": tf.constant(2, tf.int64)}
    seed = tf.constant([11, 12], tf.int64)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))   # documented split
    crop = ci.ClassificationInput(48).random_crop(image, crop_seed)
    flipped = tf.image.stateless_random_flip_left_right(crop, flip_seed)
    expected = di.normalize_image(tf.image.resize(flipped, (48, 48), method="bilinear"))
    output, label = ci.ClassificationInput(48).train_fn(example, seed)
    np.testing.assert_allclose(output.numpy(), expected.numpy(), rtol=1e-6)
    assert label == 2
    unflipped, _ = ci.ClassificationInput(48, horizontal_flip=False).train_fn(example, seed)
    np.testing.assert_allclose(unflipped.numpy(), di.normalize_image(tf.image.resize(crop, (48, 48))).numpy(),
                               rtol=1e-6)


def test_flips_happen_about_half_the_time_and_never_when_off():
    # Columns get brighter to the right; a flipped output gets darker.
    ramp = np.repeat(np.repeat(np.linspace(0, 255, 200)[None, :, None], 150, axis=0), 3, axis=2)
    example = {"image": tf.constant(ramp.astype(np.uint8)), "label": tf.constant(0, tf.int64)}

    def flipped(parser, k):
        output, _ = parser.train_fn(example, tf.constant([k, 0]))
        return float(output[:, -1].numpy().mean() - output[:, 0].numpy().mean()) < 0

    on, off = ci.ClassificationInput(32), ci.ClassificationInput(32, horizontal_flip=False)
    flips = sum(flipped(on, k) for k in range(40))
    assert 10 <= flips <= 30
    assert not any(flipped(off, k) for k in range(10))


def test_the_same_seeds_give_the_same_images_in_a_parallel_map():
    images = np.random.default_rng(1).integers(0, 256, (12, 90, 110, 3)).astype(np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(12, dtype=np.int64)})
    parser = ci.ClassificationInput(40)

    def run(seed):
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        mapped = tf.data.Dataset.zip(dataset, seeds).map(parser.train_fn, num_parallel_calls=4, deterministic=False)
        return sorted((int(label), image.tobytes()) for image, label in mapped.as_numpy_iterator())

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert [label for label, _ in first] == list(range(12))
    assert sum(a != b for a, b in zip(first, other)) >= 10


def test_unseeded_train_runs_in_a_dataset_map():
    dataset = tf.data.Dataset.from_tensors({"image": tf.zeros([50, 70, 3], tf.uint8),
                                            "label": tf.constant(1, tf.int64)}).repeat(3)
    images, labels = next(iter(dataset.map(ci.ClassificationInput((32, 48)).train_fn).batch(3)))
    assert images.shape == (3, 32, 48, 3) and labels.numpy().tolist() == [1, 1, 1]
    np.testing.assert_allclose(images.numpy(), np.broadcast_to(_normalised(0), (3, 32, 48, 3)), rtol=1e-6)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"crop_area_range": (0.0, 1.0)}, "crop_area_range"),
    ({"crop_area_range": (0.5, 0.2)}, "crop_area_range"),
    ({"aspect_ratio_range": (0.0, 1.0)}, "aspect_ratio_range"),
    ({"center_crop_fraction": 1.5}, "center_crop_fraction"),
])
def test_bad_arguments_name_the_problem(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ci.ClassificationInput(224, **kwargs)
    with pytest.raises(ValueError, match="image_size"):
        ci.ClassificationInput((0, 224))
