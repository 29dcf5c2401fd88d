"""Writes TFRecords of tf.Example in Model Garden's key layout (`tf_example`, `write_tfrecord`), the records the
`tfrecord:GLOB` source (`tfrecord_reader`, whose docstring lists the keys) reads, and converts COCO datasets to them
(`coco_to_tfrecord`, with contiguous class indices where Model Garden's converter keeps COCO's category ids).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from spinenet_tf.data import bad_data, image_codec, instance_masks, sources


def _int64_list(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _float_list(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _bytes_list(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def tf_example(example: dict, task: str, *, image_format: str = "png", class_names: tuple[str, ...] = ()) -> bytes:
    """One example of `task`'s layout -> a serialized tf.Example in Model Garden's key layout.

    Detection: image/encoded, image/format, image/height, image/width, image/source_id (the image id),
    image/object/bbox/{ymin,xmin,ymax,xmax} (normalised), image/object/class/label, image/object/is_crowd,
    image/object/area (pixels) and, with `class_names`, image/object/class/text. Instance segmentation: those and
    image/object/mask (a 0/1 PNG of each `objects/segmentation` mask; the area is then its pixel count, as in
    Model Garden's COCO converter). Classification: image/encoded, image/format, image/height, image/width,
    image/class/label.
    """
    image = np.asarray(example["image"], np.uint8)
    height, width = image.shape[:2]
    feature = {
        "image/encoded": _bytes_list([image_codec.encode_image(image, image_format)]),
        "image/format": _bytes_list([image_format.encode()]),
        "image/height": _int64_list([height]),
        "image/width": _int64_list([width]),
    }
    if task == "classification":
        feature["image/class/label"] = _int64_list([np.asarray(example["label"])])
    else:
        objects = example["objects"]
        boxes = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
        labels = np.asarray(objects["label"], np.int64).reshape(-1)
        crowd = np.asarray(objects.get("is_crowd", np.zeros(len(labels), bool)), np.int64).reshape(-1)
        feature["image/source_id"] = _bytes_list([str(int(np.asarray(example.get("image/id", -1)))).encode()])
        for k, key in enumerate(("ymin", "xmin", "ymax", "xmax")):
            feature[f"image/object/bbox/{key}"] = _float_list(boxes[:, k])
        feature["image/object/class/label"] = _int64_list(labels)
        feature["image/object/is_crowd"] = _int64_list(crowd)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * height * width
        if task == "instance_segmentation":
            masks = np.asarray(objects["segmentation"]).reshape(len(labels), height, width)
            feature["image/object/mask"] = _bytes_list([instance_masks.encode_png_mask(m) for m in masks])
            area = np.count_nonzero(masks, axis=(1, 2))
        feature["image/object/area"] = _float_list(area)
        if class_names:
            feature["image/object/class/text"] = _bytes_list([class_names[c].encode() for c in labels])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecord(examples: Iterable[dict], path: str | os.PathLike, task: str, *, num_shards: int = 1,
                   image_format: str = "png", class_names: tuple[str, ...] = ()) -> list[str]:
    """Writes examples of `task`'s layout (e.g. `sources.load(...).dataset.as_numpy_iterator()`) as tf.Example
    records.

    Args:
        examples: Dicts of numpy arrays or tensors in `task`'s layout (`sources` module docstring).
        path: The file, or with `num_shards > 1` the prefix of `path-00000-of-00004`-style files.
        task: "detection", "instance_segmentation" (also writes the masks) or "classification".
        num_shards: Files to spread the examples over, round robin.
        image_format: "png" (lossless: read back, the pixels are the same) or "jpeg" (quality 95).
        class_names: Written as image/object/class/text (detection).

    Returns:
        The files written; `tfrecord:` + a glob of them reads them back.
    """
    if task not in bad_data.TASKS:
        raise ValueError(f"task={task!r}: must be one of {', '.join(bad_data.TASKS)}")
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format={image_format!r}: must be 'png' or 'jpeg'")
    path = os.fspath(path)
    paths = [path] if num_shards == 1 else [f"{path}-{k:05d}-of-{num_shards:05d}" for k in range(num_shards)]
    tf.io.gfile.makedirs(os.path.dirname(os.path.abspath(path)))
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    try:
        for k, example in enumerate(examples):
            example = tf.nest.map_structure(np.asarray, example)
            writers[k % num_shards].write(tf_example(example, task, image_format=image_format,
                                                     class_names=class_names))
    finally:
        for writer in writers:
            writer.close()
    return paths


def coco_to_tfrecord(annotation_file: str, image_dir: str, path: str | os.PathLike, *, num_shards: int = 1,
                     image_format: str = "jpeg", task: str = "detection") -> list[str]:
    """Converts a COCO annotation file and its images to TFRecords, checked and repaired as the `coco:` source
    reads them; class labels are the contiguous class indices, class/text the category names. With
    `task="instance_segmentation"` the records also hold each instance's mask (image/object/mask)."""
    loaded = sources.load(sources.parse(f"coco:{annotation_file}:{image_dir}", flag="coco_to_tfrecord"),
                          task, training=False)
    return write_tfrecord(loaded.dataset.as_numpy_iterator(), path, task, num_shards=num_shards,
                          image_format=image_format, class_names=loaded.info.class_names)
