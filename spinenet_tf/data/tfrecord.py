"""TFRecords of tf.Example in Model Garden's key layout: reading one record (`parse_tf_example`) and writing them.

The keys are those of Model Garden's decoders (`official/vision/dataloaders/tf_example_decoder.py` and
`classification_input.py`) and its COCO converter (`official/vision/data/create_coco_tf_record.py`):

    image/encoded, image/format, image/height, image/width, image/source_id
    detection:       image/object/bbox/{ymin,xmin,ymax,xmax} (normalised), image/object/class/label,
                     image/object/is_crowd, image/object/area, image/object/class/text
    instance_segmentation: those and image/object/mask, one PNG per instance (0/1 values, the image's size)
    classification:  image/class/label

Labels are used as written. Model Garden's COCO records hold COCO category ids (1-90), so a model reading them
needs 91 classes; `coco_to_tfrecord` writes contiguous class indices instead.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable

import numpy as np
import tensorflow as tf
from PIL import Image

from spinenet_tf.data import bad_data, instance_masks


def parse_tf_example(file_name, position, record, *, task: str, stats: bad_data.DataStats,
                     num_classes: int | None = None) -> tuple:
    """One serialized record -> the guarded step's `(ok, image, ...)` (numpy, never raising; see `bad_data`).

    Parsed in Python (protobuf), not with `tf.io.parse_single_example`, so that a record that is not a tf.Example,
    or holds a feature of the wrong type, is one skipped example rather than an op error.

    Args:
        file_name, position: Where the record is, for the log ("train-00001 record 17 (source_id 42)").
        record: The serialized tf.Example.
        task: "detection" -> (ok, image, image_id, boxes, labels, is_crowd); "instance_segmentation" -> those and
            masks uint8 [G, H, W, 1] (0 or 255) from `image/object/mask`; "classification" -> (ok, image, label).
            The image id is `image/source_id` when it is an integer, else -1.
        stats: Where skips and repairs are counted.
        num_classes: Labels at or above it count as unknown (dropped boxes; skipped classification examples).
    """
    file_name = file_name.decode() if isinstance(file_name, bytes) else str(file_name)
    name = f"{file_name} record {int(position)}"
    try:
        feature = tf.train.Example.FromString(record).features.feature
    except Exception as e:  # a protobuf DecodeError or anything else: not a tf.Example
        stats.record("bad_record", name, f"not a tf.Example ({type(e).__name__}); skipped")
        return bad_data.skipped(task)

    def values(key, kind):
        return list(getattr(feature[key], kind).value) if key in feature else []

    source_id = b"".join(values("image/source_id", "bytes_list")[:1]).decode("utf-8", "replace")
    if source_id:
        name = f"{name} (source_id {source_id})"
    encoded = values("image/encoded", "bytes_list")
    if not encoded:
        stats.record("corrupt_image", name, "no image/encoded bytes; skipped")
        return bad_data.skipped(task)
    image = bad_data.decode_image(encoded[0], name, stats)
    if image is None:
        return bad_data.skipped(task)
    if task == "classification":
        labels = values("image/class/label", "int64_list")
        if len(labels) != 1 or labels[0] < 0 or (num_classes is not None and labels[0] >= num_classes):
            stats.record("missing_label", name, f"image/class/label is {labels}, not one class index; skipped")
            return bad_data.skipped(task)
        return True, image, np.int64(labels[0])
    coordinates = [values(f"image/object/bbox/{key}", "float_list") for key in ("ymin", "xmin", "ymax", "xmax")]
    labels = values("image/object/class/label", "int64_list")
    crowd = values("image/object/is_crowd", "int64_list") or [0] * len(labels)
    if len({len(c) for c in coordinates} | {len(labels), len(crowd)}) != 1:
        stats.record("bad_annotation", name, "image/object/bbox/*, class/label and is_crowd have different lengths "
                     f"({', '.join(str(len(c)) for c in [*coordinates, labels, crowd])}); skipped")
        return bad_data.skipped(task)
    boxes = np.array(coordinates, np.float64).T.reshape(-1, 4)
    names = [f"{name} box {k}" for k in range(len(labels))]
    masks = None
    if task == "instance_segmentation":
        encoded_masks = values("image/object/mask", "bytes_list")
        if len(encoded_masks) != len(labels):
            stats.record("bad_annotation", name, f"{len(labels)} boxes but {len(encoded_masks)} image/object/mask "
                         "entries; skipped")
            return bad_data.skipped(task)
        masks, kept = instance_masks.decode_png_masks(encoded_masks, *image.shape[:2], names, stats)
        boxes, labels, crowd = boxes[kept], np.asarray(labels, np.int64)[kept], np.asarray(crowd, np.int64)[kept]
        names = [n for n, k in zip(names, kept) if k]
    repaired = bad_data.repair_boxes(boxes, labels, crowd, names, (1, 1), stats, num_classes, units="normalised",
                                     masks=masks)
    image_id = int(source_id) if re.fullmatch(r"-?\d{1,18}", source_id) else -1
    return (True, image, np.int64(image_id), *repaired)


def _int64_list(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _float_list(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _bytes_list(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _encode(image: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    if image_format == "png":
        Image.fromarray(image).save(buffer, format="png", compress_level=1)
    else:
        Image.fromarray(image).save(buffer, format="jpeg", quality=95)
    return buffer.getvalue()


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
        "image/encoded": _bytes_list([_encode(image, image_format)]),
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
    """Writes examples of `task`'s layout (e.g. `load(...).dataset.as_numpy_iterator()`) as tf.Example records.

    Args:
        examples: Dicts of numpy arrays or tensors in the layout of the module docstring.
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
    from spinenet_tf.data import sources  # sources reads TFRecords through this module

    loaded = sources.load(sources.parse(f"coco:{annotation_file}:{image_dir}", flag="coco_to_tfrecord"),
                          task, training=False)
    return write_tfrecord(loaded.dataset.as_numpy_iterator(), path, task, num_shards=num_shards,
                          image_format=image_format, class_names=loaded.info.class_names)
