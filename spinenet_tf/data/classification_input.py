"""The classification input pipeline: decoded examples -> normalised, augmented images and integer labels.

Mirrors Model Garden's `official/vision/dataloaders/classification_input.py` parser on decoded images
(`preprocess_ops.random_crop_image` / `center_crop_image`): training takes an Inception-style random crop (area
8-100% of the image, aspect ratio 3/4-4/3, 10 attempts, falling back to the centre crop when no attempt fits),
a random horizontal flip and a bilinear resize to `image_size`; evaluation crops the centre square of 87.5% of the
shorter side, then resizes. Both normalise with ImageNet statistics (`detection_input.normalize_image`).

Examples come as `{"image": uint8 [H, W, 3], "label": int64}` (`spinenet_tf.data.sources`).

Determinism: `train_fn(example, seed)` with a per-example `seed` (int [2]) uses stateless random ops, so the same
seeds give the same images whatever the order or parallelism of the map. Without a seed it uses TF's global
generator, as Model Garden does:

    seeds = tf.data.Dataset.random(seed=7).batch(2)
    train = tf.data.Dataset.zip(dataset, seeds).map(parser.train_fn, num_parallel_calls=tf.data.AUTOTUNE)
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from spinenet_tf.data.detection_input import normalize_image

CENTER_CROP_FRACTION = 0.875   # 224 / 256 (MG preprocess_ops.CENTER_CROP_FRACTION)


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size={image_size!r}: both sides must be positive")
    return int(height), int(width)


def center_crop(image: tf.Tensor, fraction: float = CENTER_CROP_FRACTION) -> tf.Tensor:
    """The centred square whose side is `fraction` of the shorter side (MG `center_crop_image`)."""
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    side = fraction * tf.minimum(size[0], size[1])
    offset = tf.cast((size - side) / 2.0, tf.int32)
    side = tf.cast(side, tf.int32)
    return image[offset[0]:offset[0] + side, offset[1]:offset[1] + side, :]


class ClassificationInput:
    """Builds the per-example functions `train_fn` / `eval_fn` for `tf.data.Dataset.map`.

    Args:
        image_size: (H, W) of the model input, or one int.
        horizontal_flip: Random left-right flip in training.
        crop_area_range: Fraction of the image area a training crop covers (MG: 0.08-1.0).
        aspect_ratio_range: Width / height of a training crop (MG: 3/4-4/3).
        center_crop_fraction: Side of the evaluation crop over the shorter image side (MG: 0.875).
        max_attempts: Crop samples tried before falling back to the centre crop (MG: 10).

    Example:
        parser = ClassificationInput((224, 224))
        train = dataset.map(parser.train_fn).batch(64)       # (image float32 [224, 224, 3], label int64) pairs
    """

    def __init__(self, image_size: int | Sequence[int], *, horizontal_flip: bool = True,
                 crop_area_range: tuple[float, float] = (0.08, 1.0),
                 aspect_ratio_range: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
                 center_crop_fraction: float = CENTER_CROP_FRACTION, max_attempts: int = 10):
        if not 0.0 < crop_area_range[0] <= crop_area_range[1] <= 1.0:
            raise ValueError(f"crop_area_range={crop_area_range!r}: need 0 < min <= max <= 1")
        if not 0.0 < aspect_ratio_range[0] <= aspect_ratio_range[1]:
            raise ValueError(f"aspect_ratio_range={aspect_ratio_range!r}: need 0 < min <= max")
        if not 0.0 < center_crop_fraction <= 1.0:
            raise ValueError(f"center_crop_fraction={center_crop_fraction!r}: must be in (0, 1]")
        self.image_size = _size(image_size)
        self.horizontal_flip = horizontal_flip
        self.crop_area_range = tuple(crop_area_range)
        self.aspect_ratio_range = tuple(aspect_ratio_range)
        self.center_crop_fraction = center_crop_fraction
        self.max_attempts = max_attempts

    def _crop_window(self, image: tf.Tensor, seed) -> tuple[tf.Tensor, tf.Tensor]:
        options = dict(bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
                       min_object_covered=self.crop_area_range[0], aspect_ratio_range=self.aspect_ratio_range,
                       area_range=self.crop_area_range, max_attempts=self.max_attempts)
        if seed is None:
            begin, size, _ = tf.image.sample_distorted_bounding_box(tf.shape(image), **options)
        else:
            begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(tf.shape(image), seed=seed, **options)
        return begin, size

    def random_crop(self, image: tf.Tensor, seed=None) -> tf.Tensor:
        """The Inception-style crop; when every attempt fails (the whole image comes back), the centre crop."""
        begin, size = self._crop_window(image, seed)
        cropped = tf.slice(image, begin, size)
        return tf.cond(tf.reduce_all(tf.equal(tf.shape(cropped), tf.shape(image))),
                       lambda: center_crop(image, self.center_crop_fraction), lambda: cropped)

    def train_fn(self, example, seed=None):
        """One training example -> (normalised image float32 [H, W, 3], label int64).

        Args:
            example: `{"image": uint8 [H, W, 3], "label": int64}`.
            seed: Optional int32/int64 [2] for stateless randomness (module docstring).
        """
        image = example["image"]
        crop_seed = flip_seed = None
        if seed is not None:
            crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
        image = self.random_crop(image, crop_seed)
        if self.horizontal_flip:
            image = (tf.image.random_flip_left_right(image) if seed is None
                     else tf.image.stateless_random_flip_left_right(image, flip_seed))
        image = tf.image.resize(image, self.image_size, method="bilinear")
        image.set_shape([*self.image_size, 3])
        return normalize_image(image), tf.cast(example["label"], tf.int64)

    def eval_fn(self, example):
        """One evaluation example -> (centre-cropped, resized, normalised image, label int64)."""
        image = center_crop(example["image"], self.center_crop_fraction)
        image = tf.image.resize(image, self.image_size, method="bilinear")
        image.set_shape([*self.image_size, 3])
        return normalize_image(image), tf.cast(example["label"], tf.int64)
