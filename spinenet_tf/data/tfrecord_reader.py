"""The `tfrecord:GLOB[,GLOB...]` source: TFRecords of tf.Example in Model Garden's key layout, one record parsed in
the guarded step (`parse_tf_example`, see `bad_data`) of `read`, the reader `sources.load` calls.

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

import functools
import re

import numpy as np
import tensorflow as tf

from spinenet_tf.data import bad_data, instance_masks
from spinenet_tf.data.reading import DataInfo, Reading, Source, guarded, shard_and_shuffle


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


def read(source: Source, reading: Reading) -> tuple[tf.data.Dataset, DataInfo]:
    """The records of `source.files` in `reading.task`'s layout. Sharded by file when there are at least as many
    files as input pipelines, else by record; the class count is unknown (`DataInfo.num_classes` None)."""
    files = tf.data.Dataset.from_tensor_slices(list(source.files))
    by_file = len(source.files) >= reading.num_shards
    if by_file:
        files = shard_and_shuffle(files, len(source.files), reading)
    elif reading.training:
        files = files.shuffle(len(source.files), seed=reading.seed, reshuffle_each_iteration=True)

    def records(file_name):
        # A corrupt record (bad CRC) ends its file with one TF warning instead of ending the run.
        dataset = tf.data.TFRecordDataset(file_name).ignore_errors(log_warning=True).enumerate()
        return dataset.map(lambda position, record: (file_name, position, record))

    dataset = files.interleave(records, cycle_length=min(len(source.files), 8), block_length=1,
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=reading.deterministic)
    if not by_file:
        dataset = dataset.shard(reading.num_shards, reading.input_context.input_pipeline_id)
    parse = functools.partial(parse_tf_example, task=reading.task, stats=reading.stats,
                              num_classes=reading.num_classes)
    # The records say nothing of their class count (Model Garden's COCO records: category ids, 91 classes).
    return guarded(dataset, parse, reading), DataInfo(num_classes=None)
