"""Data sources: one string per dataset (`--train_data`, `--eval_data`), one reader per kind, one layout per task.

Spec strings (`parse`):

    builtin:shapes[:SPLIT]            the generated shapes dataset (`builtin_shapes`), SPLIT "train" by default
    tfds:NAME[:VERSION][:SPLIT]       a prepared TFDS dataset, e.g. tfds:coco/2017:validation, tfds:imagenet2012
    coco:ANNOTATIONS.json:IMAGE_DIR   a COCO-format annotation file and its image folder (`coco`; users' own data)
    tfrecord:GLOB[,GLOB...]           tf.Example files in Model Garden's layout (`tfrecord`, `write_tfrecord`)

SPLIT takes TFDS slicing (`train[:500]`, `validation[10%:]`). Every reader (`load`) yields unbatched examples in
ONE layout per task, the TFDS `coco/2017` one that `DetectionInput` parses:

    detection:       {"image": uint8 [H, W, 3], "image/id": int64,
                      "objects": {"bbox": float32 [G, 4] normalised (ymin, xmin, ymax, xmax),
                                  "label": int64 [G] class index, "is_crowd": bool [G]}}
    instance_segmentation: detection's, and "objects": {..., "segmentation": uint8 [G, H, W, 1]}, each box's
                     instance mask, 0 or 255 (TFDS `lvis`'s layout): COCO JSON polygons or RLE, Model Garden's
                     `image/object/mask` PNGs, TFDS `objects/segmentation`, the built-in generator's exact masks.
                     Crowd annotations are kept (with `is_crowd`): the input pipeline leaves them out of training
                     targets and keeps them for evaluation.
    classification:  {"image": uint8 [H, W, 3], "label": int64}

Bad data never ends a run (`bad_data`): file-based sources decode in one guarded step that skips missing or
undecodable images, converts other colour modes to RGB, clips boxes and drops degenerate ones, unknown categories
and malformed annotations, each counted once in the load's `DataStats` and logged once with its file, record or
annotation id; masks too (`instance_masks`: bad polygons left out, self-intersecting ones filled even-odd,
masks clipped to the image, annotations without a usable mask dropped). The built-in source needs no decoding.
Bad flags stop in `parse` with one line naming the flag.

Image ids: COCO JSON keeps its own; TFRecords use `image/source_id` when it is an integer, else -1 (the COCO
evaluator then numbers the images itself); TFDS uses `image/id` when the dataset has one, else -1.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np
import tensorflow as tf

from spinenet_tf.data import bad_data, coco, instance_masks, tfrecord
from spinenet_tf.data.bad_data import TASKS, DataStats

SPEC_FORMS = ("builtin:shapes[:split]", "tfds:NAME[:split]", "coco:ANNOTATIONS.json:IMAGE_DIR", "tfrecord:GLOB")
BUILTIN_DATASETS = ("shapes",)

_TFDS_VERSION = re.compile(r"^\d+\.(\d+|\*)\.(\d+|\*)$")


# === Parsing ===

@dataclasses.dataclass(frozen=True)
class Source:
    """A checked data-source string (`parse`); `load` reads it.

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


def parse(spec: str, *, flag: str = "--train_data", data_dir: str | None = None) -> Source:
    """Checks a data-source string: syntax, that its files exist, that a TFDS name and split are known.

    Args:
        spec: One of `SPEC_FORMS` (module docstring).
        flag: The flag the string came from; every error names it.
        data_dir: TFDS data directory for `tfds:` sources (`load` can override it).

    Returns:
        The `Source`.

    Raises:
        ValueError: One line, `--flag='spec': what is wrong`, e.g.
            `--train_data='coco:x.json:imgs': annotation file x.json does not exist`.
    """
    kind, sep, rest = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    base = Source(spec=str(spec), kind=kind, flag=flag)
    if kind not in _PARSERS or not sep:
        raise base.error(f"unknown data source; valid forms are {', '.join(SPEC_FORMS)}")
    if not rest:
        raise base.error(f"nothing after {kind!r}; expected {[f for f in SPEC_FORMS if f.startswith(kind)][0]}")
    return _PARSERS[kind](base, rest, data_dir)


def _parse_builtin(base: Source, rest: str, data_dir: str | None) -> Source:
    del data_dir
    name, _, split = rest.partition(":")
    if name not in BUILTIN_DATASETS:
        raise base.error(f"unknown built-in dataset {name!r}; valid: {', '.join(BUILTIN_DATASETS)}")
    source = dataclasses.replace(base, name=name, split=split or "train")
    _builtin_range(source)  # raises on a bad split or slice
    return source


def _parse_tfds(base: Source, rest: str, data_dir: str | None) -> Source:
    # NAME[:VERSION][:SPLIT]: TFDS names carry no ':', versions look like 1.2.3 or 3.*.*, splits may hold ':'.
    name, _, tail = rest.partition(":")
    version, _, split = tail.partition(":")
    if _TFDS_VERSION.match(version):
        name = f"{name}:{version}"
    else:
        split = tail
    split = split or "train"
    if data_dir is not None and not tf.io.gfile.isdir(data_dir):
        raise base.error(f"TFDS data_dir {data_dir} does not exist")
    source = dataclasses.replace(base, name=name, split=split, data_dir=data_dir)
    builder = _tfds_builder(source)
    _check_tfds_split(source, builder)
    return source


def _parse_coco(base: Source, rest: str, data_dir: str | None) -> Source:
    del data_dir
    # Split after the ".json", so the image folder may contain ':'.
    match = re.match(r"^(.+?\.json):(.+)$", rest, flags=re.IGNORECASE)
    if not match:
        raise base.error("expected coco:ANNOTATIONS.json:IMAGE_DIR")
    annotation_file, image_dir = match.groups()
    source = dataclasses.replace(base, annotation_file=annotation_file, image_dir=image_dir)
    if not tf.io.gfile.exists(annotation_file) or tf.io.gfile.isdir(annotation_file):
        raise source.error(f"annotation file {annotation_file} does not exist")
    if not tf.io.gfile.isdir(image_dir):
        raise source.error(f"image folder {image_dir} does not exist")
    return source


def _parse_tfrecord(base: Source, rest: str, data_dir: str | None) -> Source:
    del data_dir
    files = []
    for pattern in rest.split(","):
        matched = tf.io.gfile.glob(pattern) if pattern else []
        matched = [f for f in matched if not tf.io.gfile.isdir(f)]
        if not matched:
            raise base.error(f"no files match {pattern!r}")
        files.extend(matched)
    return dataclasses.replace(base, files=tuple(sorted(set(files))))


_PARSERS = {"builtin": _parse_builtin, "tfds": _parse_tfds, "coco": _parse_coco, "tfrecord": _parse_tfrecord}


# === Loading ===

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
class Loaded:
    """A read source: `dataset` (unbatched examples, not repeated), its `info` and the `stats` it fills as it runs."""

    dataset: tf.data.Dataset
    info: DataInfo
    stats: DataStats


@dataclasses.dataclass(frozen=True)
class _Reading:
    """How `load` was asked to read."""

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


def load(source: Source, task: str, *, training: bool, seed: int | None = None,
         input_context: tf.distribute.InputContext | None = None, data_dir: str | None = None,
         num_classes: int | None = None) -> Loaded:
    """Reads a source as unbatched examples of `task`'s layout (module docstring).

    Nothing is read until the dataset is iterated, except a COCO annotation file (parsed once per process and
    file version, then cached) and TFDS metadata.

    Args:
        source: From `parse`.
        task: "detection", "instance_segmentation" (detection with masks) or "classification".
        training: Shuffle the order of files (TFRecord, TFDS) or of examples (COCO JSON, built-in), anew each epoch.
            Examples are not shuffled across files, repeated or batched: that is the caller's pipeline.
        seed: Makes the shuffles (and the order of parallel decoding) reproducible; None: nondeterministic order.
        input_context: With more than one input pipeline, each reads its own shard: every
            `num_input_pipelines`-th file when there are enough files, else every `num_input_pipelines`-th example.
        data_dir: TFDS data directory, overriding the one given to `parse`.
        num_classes: When given, labels outside [0, num_classes) count as unknown categories: dropped boxes in
            detection, skipped examples in classification. Negative labels always do.

    Returns:
        `Loaded(dataset, info, stats)`.

    Raises:
        ValueError: One line naming the flag: an unknown task, a source that does not hold `task`'s data, a TFDS
            dataset that is not prepared, an annotation file that is not COCO JSON.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r}: must be one of {', '.join(TASKS)}")
    if data_dir is not None and source.kind == "tfds":
        source = dataclasses.replace(source, data_dir=data_dir)
    reading = _Reading(task=task, training=training, seed=seed, input_context=input_context,
                       num_classes=num_classes, stats=DataStats(source.flag))
    dataset, info = _READERS[source.kind](source, reading)
    return Loaded(dataset=dataset, info=info, stats=reading.stats)


def _shard_and_shuffle(dataset: tf.data.Dataset, count: int, reading: _Reading) -> tf.data.Dataset:
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


def _guarded(dataset: tf.data.Dataset, read_fn, reading: _Reading) -> tf.data.Dataset:
    """Maps `read_fn` (numpy in, `(ok, ...)` out, never raising) over `dataset` and keeps the `ok` examples."""
    detection = reading.task != "classification"
    types = _TYPES[reading.task]

    def read(*inputs):
        ok, *outputs = tf.numpy_function(read_fn, list(inputs), types)
        ok.set_shape([])
        return (ok, *outputs)

    dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=reading.deterministic)
    dataset = dataset.filter(lambda ok, *rest: ok)
    return dataset.map(_detection_example if detection else _classification_example)


# === builtin:shapes ===

def _builtin_range(source: Source) -> tuple[str, int, int]:
    """(split, start, stop) of a built-in split spec such as "train[:500]"."""
    import tensorflow_datasets as tfds  # TFDS only where it is used

    from spinenet_tf.data import builtin_shapes

    sizes = dict(builtin_shapes.SPLIT_SIZES)
    split = re.sub(r"^val(?=$|\[)", "validation", source.split)
    infos = {name: tfds.core.SplitInfo(name=name, shard_lengths=[count], num_bytes=0) for name, count in sizes.items()}
    try:
        instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
    except (ValueError, KeyError) as e:
        raise source.error(f"bad split {source.split!r} ({str(e).splitlines()[-1]}); splits: "
                           f"{', '.join(sizes)} (with TFDS slicing, e.g. train[:500])") from None
    if len(instructions) != 1:
        raise source.error(f"split {source.split!r}: one split at a time")
    instruction = instructions[0]
    start = instruction.from_ or 0
    stop = sizes[instruction.splitname] if instruction.to is None else instruction.to
    if stop <= start:
        raise source.error(f"split {source.split!r} selects no examples")
    return instruction.splitname, start, stop


def _read_builtin(source: Source, reading: _Reading) -> tuple[tf.data.Dataset, DataInfo]:
    from spinenet_tf.data import builtin_shapes

    split, start, stop = _builtin_range(source)
    indices = _shard_and_shuffle(tf.data.Dataset.range(start, stop), stop - start, reading)
    if reading.task != "classification":
        with_masks = reading.task == "instance_segmentation"
        features = builtin_shapes.detection_features_fn(split, with_masks=with_masks)
        keys = ("bbox", "label", "is_crowd") + (("segmentation",) if with_masks else ())

        def to_example(index):
            example = features(index)
            objects = example["objects"]
            return {"image": example["image"], "image/id": example["image/id"],
                    "objects": {key: objects[key] for key in keys}}
    else:
        to_example = builtin_shapes.classification_features_fn(split)
    dataset = indices.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=reading.deterministic)
    names = builtin_shapes.CLASS_NAMES
    return dataset, DataInfo(num_classes=len(names), class_names=names, num_examples=stop - start,
                             category_ids=tuple(range(1, len(names) + 1)))


# === coco:ANNOTATIONS.json:IMAGE_DIR ===

def _read_coco(source: Source, reading: _Reading) -> tuple[tf.data.Dataset, DataInfo]:
    if reading.task == "classification":
        raise source.error("COCO annotation files hold detection data; for classification use builtin:, tfds: "
                           "or tfrecord:")
    try:
        index, new = coco.cached_index(source.annotation_file, source.image_dir,
                                       with_masks=reading.task == "instance_segmentation")
    except coco.CocoFormatError as e:
        raise source.error(str(e)) from None
    for kind, item, message in index.events:
        reading.stats.record(kind, item, message, log=new)
    count = len(index.paths)
    positions = _shard_and_shuffle(tf.data.Dataset.range(count), count, reading)
    dataset = _guarded(positions, functools.partial(index.read, stats=reading.stats), reading)
    return dataset, DataInfo(num_classes=len(index.category_ids), class_names=index.class_names,
                             num_examples=count, category_ids=index.category_ids)


# === tfrecord:GLOB ===

def _read_tfrecord(source: Source, reading: _Reading) -> tuple[tf.data.Dataset, DataInfo]:
    files = tf.data.Dataset.from_tensor_slices(list(source.files))
    by_file = len(source.files) >= reading.num_shards
    if by_file:
        files = _shard_and_shuffle(files, len(source.files), reading)
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
    parse = functools.partial(tfrecord.parse_tf_example, task=reading.task, stats=reading.stats,
                              num_classes=reading.num_classes)
    # The records say nothing of their class count (Model Garden's COCO records: category ids, 91 classes).
    return _guarded(dataset, parse, reading), DataInfo(num_classes=None)


# === tfds:NAME[:split] ===

def _tfds_builder(source: Source):
    import tensorflow_datasets as tfds

    from spinenet_tf.data import builtin_shapes  # registers the builtin_shapes builder

    try:
        return tfds.builder(source.name, data_dir=source.data_dir)
    except Exception as e:  # DatasetNotFoundError, a bad config or version: all one message
        raise source.error(f"unknown TFDS dataset {source.name!r} ({str(e).splitlines()[0]})") from None


def _check_tfds_split(source: Source, builder) -> None:
    import tensorflow_datasets as tfds

    try:
        instruction = tfds.core.ReadInstruction.from_spec(source.split)
        if builder.info.splits:  # known once the dataset is prepared
            instruction.to_absolute(builder.info.splits)
    except (ValueError, KeyError) as e:
        raise source.error(f"bad split {source.split!r} ({str(e).splitlines()[-1]})") from None


def _tfds_label_feature(source: Source, features, task: str):
    import tensorflow_datasets as tfds

    if "image" not in features or not isinstance(features["image"], tfds.features.Image):
        raise source.error(f"TFDS dataset {source.name} has no 'image' feature")
    if task != "classification":
        objects = getattr(features["objects"], "feature", {}) if "objects" in features else {}
        if "bbox" not in objects or "label" not in objects:
            raise source.error(f"TFDS dataset {source.name} has no objects/bbox and objects/label for detection")
        masks = objects["segmentation"] if "segmentation" in objects else None
        if task == "instance_segmentation" and not isinstance(masks, tfds.features.Image):
            # TFDS coco/2017 has none: its builder keeps boxes only.
            raise source.error(f"TFDS dataset {source.name} has no objects/segmentation (instance masks); for COCO "
                               "masks read its instances_*.json with coco:ANNOTATIONS.json:IMAGE_DIR")
        return objects["label"]
    if "label" not in features:
        raise source.error(f"TFDS dataset {source.name} has no 'label' for classification")
    return features["label"]


def _read_tfds(source: Source, reading: _Reading) -> tuple[tf.data.Dataset, DataInfo]:
    import tensorflow_datasets as tfds

    builder = _tfds_builder(source)
    _check_tfds_split(source, builder)
    features = builder.info.features
    label_feature = _tfds_label_feature(source, features, reading.task)
    detection = reading.task != "classification"
    with_masks = reading.task == "instance_segmentation"
    # Only the features we use are decoded, and images and masks not at all: the guarded step decodes them.
    object_keys = ("bbox", "label", "is_crowd") + (("segmentation",) if with_masks else ())
    wanted = {"image": True, "label": True} if not detection else {
        "image": True, "objects": {key: True for key in object_keys if key in features["objects"]}}
    for key in ("image/id", "image/filename"):
        if detection and key in features:
            wanted[key] = True
    skip = {"image": tfds.decode.SkipDecoding()}
    if with_masks:
        skip["objects"] = {"segmentation": tfds.decode.SkipDecoding()}
    decoders = tfds.decode.PartialDecoding(wanted, decoders=skip)
    read_config = tfds.ReadConfig(shuffle_seed=reading.seed, add_tfds_id=True,
                                  input_context=reading.input_context if reading.num_shards > 1 else None)
    try:
        dataset = builder.as_dataset(split=source.split, shuffle_files=reading.training, decoders=decoders,
                                     read_config=read_config)
    except AssertionError:
        raise source.error(f"TFDS dataset {source.name} is not prepared in {builder.data_dir_root} (prepare it with "
                           "`tfds build`, or set the TFDS data_dir)") from None
    stats = reading.stats

    def name_of(tfds_id, file_name):
        file_name = file_name.decode("utf-8", "replace") if isinstance(file_name, bytes) else ""
        return f"{source.name}:{source.split} {tfds_id.decode()}" + (f" ({file_name})" if file_name else "")

    if detection:
        def read(tfds_id, data, image_id, file_name, boxes, labels, crowd, *encoded_masks):
            name = name_of(tfds_id, file_name)
            image = bad_data.decode_image(data, name, stats)
            if image is None:
                return bad_data.skipped(reading.task)
            names = [f"{name} box {k}" for k in range(len(labels))]
            masks = None
            if with_masks:
                masks, kept = instance_masks.decode_png_masks(list(encoded_masks[0]), *image.shape[:2], names, stats)
                boxes, labels, crowd = boxes[kept], labels[kept], crowd[kept]
                names = [n for n, k in zip(names, kept) if k]
            repaired = bad_data.repair_boxes(boxes, labels, crowd, names, (1, 1), stats, reading.num_classes,
                                             units="normalised", masks=masks)
            return (True, image, np.int64(image_id), *repaired)

        def inputs(example):
            objects = example["objects"]
            no_crowd = tf.zeros_like(objects["label"], tf.bool)
            masks = (objects["segmentation"],) if with_masks else ()
            return (example["tfds_id"], example["image"], example.get("image/id", tf.constant(-1, tf.int64)),
                    example.get("image/filename", tf.constant("")), objects["bbox"], objects["label"],
                    objects.get("is_crowd", no_crowd), *masks)
    else:
        def read(tfds_id, data, label):
            name = name_of(tfds_id, b"")
            if label < 0 or (reading.num_classes is not None and label >= reading.num_classes):
                stats.record("missing_label", name, f"label {label} is not a class index; skipped")
                return bad_data.skipped("classification")
            image = bad_data.decode_image(data, name, stats)
            return bad_data.skipped("classification") if image is None else (True, image, np.int64(label))

        def inputs(example):
            return example["tfds_id"], example["image"], tf.cast(example["label"], tf.int64)

    dataset = _guarded(dataset.map(inputs), read, reading)
    try:
        num_examples = builder.info.splits[source.split].num_examples
    except (KeyError, ValueError):
        num_examples = None  # not prepared (or mocked): the splits are unknown
    num_classes = getattr(label_feature, "num_classes", None)
    names = tuple(getattr(label_feature, "names", None) or ()) if num_classes else ()
    return dataset, DataInfo(num_classes=num_classes, class_names=names, num_examples=num_examples)


_READERS = {"builtin": _read_builtin, "tfds": _read_tfds, "coco": _read_coco, "tfrecord": _read_tfrecord}
