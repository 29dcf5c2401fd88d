"""The built-in shapes (`builtin_shapes`) as `tf.data` pipelines in the TFDS `coco/2017` feature layout (plus
LVIS's `segmentation`), the layout of every data source; nothing is written to disk.

Detection features (G objects, images H x W):
    image           uint8 [H, W, 3]
    image/filename  string, f"{image_id:012d}.png" (COCO's file naming)
    image/id        int64
    objects/id      int64 [G]         annotation ids
    objects/area    int64 [G]         visible mask pixels
    objects/bbox    float32 [G, 4]    [ymin, xmin, ymax, xmax] / [H, W, H, W], in [0, 1]
    objects/label   int64 [G]         class index
    objects/is_crowd bool [G]         always False
    objects/segmentation uint8 [G, H, W, 1]  0 or 255, as TFDS `lvis` (always in the TFDS builder
                                      `builtin_shapes_tfds`; in `as_dataset` with `with_masks=True`). Read it as
                                      `mask > 0`.
Classification features: `image` uint8 [H, W, 3], `label` int64 (one shape per image, near the centre).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from spinenet_tf.data import builtin_shapes


def file_name(image_id: int, extension: str = "png") -> str:
    """An image's file name, COCO's naming: the id in 12 digits."""
    return f"{image_id:012d}.{extension}"


def detection_features(example: dict, with_masks: bool) -> dict:
    """A `generate_example` dict -> numpy features in the TFDS `coco/2017` layout (see the module docstring)."""
    height, width = example["image"].shape[:2]
    num_objects = len(example["classes"])
    objects = {
        "id": example["image_id"] * 100 + np.arange(1, num_objects + 1, dtype=np.int64),
        "area": example["masks"].sum(axis=(1, 2), dtype=np.int64),
        "bbox": example["boxes"] / np.array([height, width, height, width], np.float32),
        "label": example["classes"].astype(np.int64),
        "is_crowd": np.zeros(num_objects, bool),
    }
    if with_masks:
        objects["segmentation"] = example["masks"][..., None] * np.uint8(255)
    return {"image": example["image"], "image/filename": file_name(example["image_id"]),
            "image/id": np.int64(example["image_id"]), "objects": objects}


def detection_features_fn(split: str, image_size: int | Sequence[int] = builtin_shapes.DEFAULT_IMAGE_SIZE, *,
                          with_masks: bool = False):
    """The `tf.data` map function of `as_dataset`: an int64 index tensor -> that example's feature dict.

    For readers that pick, shard or shuffle indices first (`Dataset.range(a, b).shard(...).map(fn)`), so skipped
    examples are never generated (`skip` and `shard` after a map still run it on every element).
    """
    split = builtin_shapes.canonical_split(split)
    size = builtin_shapes.checked_image_size(image_size)
    keys = ("id", "area", "bbox", "label", "is_crowd") + (("segmentation",) if with_masks else ())
    types = (tf.int64, tf.int64, tf.float32, tf.int64, tf.bool) + ((tf.uint8,) if with_masks else ())
    shapes = ([None], [None], [None, 4], [None], [None]) + (([None, *size, 1],) if with_masks else ())

    def generate(index):
        features = detection_features(builtin_shapes.generate_example(int(index), split, size), with_masks)
        return (features["image"], features["image/id"], *(features["objects"][key] for key in keys))

    def to_features(index):
        image, image_id, *objects = tf.numpy_function(generate, [index], (tf.uint8, tf.int64, *types),
                                                      stateful=False)
        image.set_shape([*size, 3])
        image_id.set_shape([])
        for tensor, shape in zip(objects, shapes):
            tensor.set_shape(shape)
        return {"image": image, "image/filename": tf.strings.as_string(image_id, width=12, fill="0") + ".png",
                "image/id": image_id, "objects": dict(zip(keys, objects))}

    return to_features


def classification_features_fn(split: str, image_size: int | Sequence[int] = builtin_shapes.DEFAULT_IMAGE_SIZE):
    """The map function of `as_classification_dataset`: an int64 index -> `{"image", "label"}`."""
    split = builtin_shapes.canonical_split(split)
    size = builtin_shapes.checked_image_size(image_size)

    def generate(index):
        example = builtin_shapes.generate_classification_example(int(index), split, size)
        return example["image"], np.int64(example["label"])

    def to_features(index):
        image, label = tf.numpy_function(generate, [index], (tf.uint8, tf.int64), stateful=False)
        image.set_shape([*size, 3])
        label.set_shape([])
        return {"image": image, "label": label}

    return to_features


def as_dataset(split: str, num_examples: int | None = None,
               image_size: int | Sequence[int] = builtin_shapes.DEFAULT_IMAGE_SIZE, *,
               with_masks: bool = False) -> tf.data.Dataset:
    """Detection examples 0..num_examples-1 of `split`, generated on the fly, in the TFDS `coco/2017` layout.

    Args:
        split: "train" or "validation" ("val" is accepted).
        num_examples: How many; `builtin_shapes.SPLIT_SIZES[split]` (2,000 / 200) by default.
        image_size: (H, W), or one int.
        with_masks: Add `objects/segmentation` (uint8 [G, H, W, 1], 0 or 255, as TFDS `lvis`).

    Returns:
        A finite `tf.data.Dataset` of feature dicts (module docstring), in index order, not shuffled, not
        batched. With `with_masks=True` and the default sizes, the same elements as
        `tfds.load("builtin_shapes/detection", split=split)`.

    Example:
        for example in as_dataset("validation", num_examples=2):
            print(example["image/id"], example["objects"]["bbox"])
    """
    to_features = detection_features_fn(split, image_size, with_masks=with_masks)
    count = builtin_shapes.split_size(split, num_examples)
    return tf.data.Dataset.range(count).map(to_features, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def as_classification_dataset(split: str, num_examples: int | None = None,
                              image_size: int | Sequence[int] = builtin_shapes.DEFAULT_IMAGE_SIZE
                              ) -> tf.data.Dataset:
    """Classification examples of `split` as `{"image": uint8 [H, W, 3], "label": int64}`, in index order.

    Same arguments as `as_dataset`; the elements are those of `tfds.load("builtin_shapes/classification")`.
    """
    to_features = classification_features_fn(split, image_size)
    count = builtin_shapes.split_size(split, num_examples)
    return tf.data.Dataset.range(count).map(to_features, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
