"""What `sources.load` and the readers share: the parsed `Source`, how to read it (`Reading`), what a reader says
about its data (`DataInfo`), and the two steps every reader uses (`shard_and_shuffle`, the `guarded` decode step).

A reader is a module with `read(source, reading) -> (dataset, DataInfo)` (`builtin_reader`, `coco_reader`,
`tfrecord_reader`, `tfds_reader`); `sources` parses spec strings into `Source`s and dispatches `load` to them.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from spinenet_tf.data.bad_data import DataStats


@dataclasses.dataclass(frozen=True)
class Source:
    """A checked data-source string (`sources.parse`); `sources.load` reads it.

    Attributes:
        spec: The string as given.
        kind: "builtin", "tfds", "coco" or "tfrecord".
        flag: The flag it came from, for error messages and log lines.
        name: builtin: the dataset ("shapes"); tfds: the dataset name with config and version ("coco/2017").
        split: builtin / tfds: the split, TFDS slicing allowed.
        annotation_file, image_dir: coco: the JSON file and the folder its `file_name`s are relative to.
        files: tfrecord: the matched files, sorted.
        data_dir: tfds: where the prepared data is (None: TFDS's default).
    """

    spec: str
    kind: str
    flag: str = "--train_data"
    name: str = ""
    split: str = ""
    annotation_file: str = ""
    image_dir: str = ""
    files: tuple[str, ...] = ()
    data_dir: str | None = None

    def error(self, message: str) -> ValueError:
        """The one-line error about this source: `--flag='spec': message`."""
        return ValueError(f"{self.flag}={self.spec!r}: {message}")


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a source says about itself.

    Attributes:
        num_classes: Class indices are in [0, num_classes); None when the source cannot tell (TFRecords).
        class_names: Names by class index; () when unknown.
        num_examples: Examples in the split (all shards), None when unknown without reading it all.
        category_ids: coco: the JSON's category id of each class index (class k is `category_ids[k]`).
    """

    num_classes: int | None
    class_names: tuple[str, ...] = ()
    num_examples: int | None = None
    category_ids: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class Reading:
    """How `sources.load` was asked to read (its arguments), and the `DataStats` the readers fill."""

    task: str
    training: bool
    seed: int | None
    input_context: tf.distribute.InputContext | None
    num_classes: int | None
    stats: DataStats

    @property
    def num_shards(self) -> int:
        return self.input_context.num_input_pipelines if self.input_context else 1

    @property
    def deterministic(self) -> bool:
        return not self.training or self.seed is not None


def shard_and_shuffle(dataset: tf.data.Dataset, count: int, reading: Reading) -> tf.data.Dataset:
    """Shards a dataset of cheap items (indices, file names) for this input pipeline, then shuffles them."""
    if reading.num_shards > 1:
        dataset = dataset.shard(reading.num_shards, reading.input_context.input_pipeline_id)
    if reading.training and count > 1:
        dataset = dataset.shuffle(count, seed=reading.seed, reshuffle_each_iteration=True)
    return dataset


def _detection_example(ok, image, image_id, boxes, labels, is_crowd, *masks) -> dict:
    """numpy_function outputs -> the detection (or, with masks, instance_segmentation) layout, static ranks."""
    del ok
    image.set_shape([None, None, 3])
    image_id.set_shape([])
    boxes.set_shape([None, 4])
    labels.set_shape([None])
    is_crowd.set_shape([None])
    objects = {"bbox": boxes, "label": labels, "is_crowd": is_crowd}
    for segmentation in masks:
        segmentation.set_shape([None, None, None, 1])
        objects["segmentation"] = segmentation
    return {"image": image, "image/id": image_id, "objects": objects}


def _classification_example(ok, image, label) -> dict:
    del ok
    image.set_shape([None, None, 3])
    label.set_shape([])
    return {"image": image, "label": label}


_DETECTION_TYPES = (tf.bool, tf.uint8, tf.int64, tf.float32, tf.int64, tf.bool)
_TYPES = {"detection": _DETECTION_TYPES, "instance_segmentation": (*_DETECTION_TYPES, tf.uint8),
          "classification": (tf.bool, tf.uint8, tf.int64)}


def guarded(dataset: tf.data.Dataset, read_fn, reading: Reading) -> tf.data.Dataset:
    """Maps `read_fn` (numpy in, `(ok, ...)` out, never raising; see `bad_data`) over `dataset` and keeps the `ok`
    examples, in the layout of `reading.task` (`sources` module docstring)."""
    detection = reading.task != "classification"
    types = _TYPES[reading.task]

    def read(*inputs):
        ok, *outputs = tf.numpy_function(read_fn, list(inputs), types)
        ok.set_shape([])
        return (ok, *outputs)

    dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=reading.deterministic)
    dataset = dataset.filter(lambda ok, *rest: ok)
    return dataset.map(_detection_example if detection else _classification_example)
