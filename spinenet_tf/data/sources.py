"""Data sources: one string per dataset (`--train_data`, `--eval_data`), one reader per kind, one layout per task.

Spec strings (`parse`):

    builtin:shapes[:SPLIT]            the generated shapes dataset (`builtin_shapes`), SPLIT "train" by default
    tfds:NAME[:VERSION][:SPLIT]       a prepared TFDS dataset, e.g. tfds:coco/2017:validation, tfds:imagenet2012
    coco:ANNOTATIONS.json:IMAGE_DIR   a COCO-format annotation file and its image folder (users' own data)
    tfrecord:GLOB[,GLOB...]           tf.Example files in Model Garden's layout (`tfrecord_writer` writes them)

SPLIT takes TFDS slicing (`train[:500]`, `validation[10%:]`). `load` hands a source to the reader of its kind
(`builtin_reader`, `tfds_reader`, `coco_reader`, `tfrecord_reader`; what they share is in `reading`), and every
reader yields unbatched examples in ONE layout per task, the TFDS `coco/2017` one that `DetectionInput` parses:

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
import re

import tensorflow as tf

from spinenet_tf.data import builtin_reader, coco_reader, tfds_reader, tfrecord_reader
from spinenet_tf.data.bad_data import TASKS, DataStats
from spinenet_tf.data.reading import DataInfo, Reading, Source

SPEC_FORMS = ("builtin:shapes[:split]", "tfds:NAME[:split]", "coco:ANNOTATIONS.json:IMAGE_DIR", "tfrecord:GLOB")
BUILTIN_DATASETS = ("shapes",)

_TFDS_VERSION = re.compile(r"^\d+\.(\d+|\*)\.(\d+|\*)$")


# === Parsing ===

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
    builtin_reader.split_range(source)  # raises on a bad split or slice
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
    tfds_reader.check_split(source, tfds_reader.builder(source))
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
class Loaded:
    """A read source: `dataset` (unbatched examples, not repeated), its `info` and the `stats` it fills as it runs."""

    dataset: tf.data.Dataset
    info: DataInfo
    stats: DataStats


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
    reading = Reading(task=task, training=training, seed=seed, input_context=input_context,
                      num_classes=num_classes, stats=DataStats(source.flag))
    dataset, info = _READERS[source.kind](source, reading)
    return Loaded(dataset=dataset, info=info, stats=reading.stats)


_READERS = {"builtin": builtin_reader.read, "tfds": tfds_reader.read, "coco": coco_reader.read,
            "tfrecord": tfrecord_reader.read}
