"""The `tfds:NAME[:VERSION][:SPLIT]` source: a prepared TensorFlow Datasets dataset (`coco/2017`, `lvis`,
`imagenet2012`, the built-in `builtin_shapes`, ...), read in the layout of `sources`.

Only the features a task uses are decoded by TFDS, and images and masks not at all: they are decoded in the guarded
step (`reading.guarded`, see `bad_data`), so an undecodable image or mask is skipped and named, not an op error.
TFDS is imported where it is used, so importing `sources` does not import it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from spinenet_tf.data import bad_data, instance_masks
from spinenet_tf.data.reading import DataInfo, Reading, Source, guarded


def builder(source: Source):
    """The TFDS builder of `source.name` in `source.data_dir`; raises `source.error` for an unknown dataset."""
    import tensorflow_datasets as tfds

    from spinenet_tf.data import builtin_shapes_tfds  # registers the builtin_shapes builder

    try:
        return tfds.builder(source.name, data_dir=source.data_dir)
    except Exception as e:  # DatasetNotFoundError, a bad config or version: all one message
        raise source.error(f"unknown TFDS dataset {source.name!r} ({str(e).splitlines()[0]})") from None


def check_split(source: Source, dataset_builder) -> None:
    """Raises `source.error` when `source.split` is not a split (with TFDS slicing) of the builder's dataset."""
    import tensorflow_datasets as tfds

    try:
        instruction = tfds.core.ReadInstruction.from_spec(source.split)
        if dataset_builder.info.splits:  # known once the dataset is prepared
            instruction.to_absolute(dataset_builder.info.splits)
    except (ValueError, KeyError) as e:
        raise source.error(f"bad split {source.split!r} ({str(e).splitlines()[-1]})") from None


def _label_feature(source: Source, features, task: str):
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


def read(source: Source, reading: Reading) -> tuple[tf.data.Dataset, DataInfo]:
    """The examples of a prepared TFDS split in `reading.task`'s layout, and its class count and names."""
    import tensorflow_datasets as tfds

    dataset_builder = builder(source)
    check_split(source, dataset_builder)
    features = dataset_builder.info.features
    label_feature = _label_feature(source, features, reading.task)
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
        dataset = dataset_builder.as_dataset(split=source.split, shuffle_files=reading.training,
                                             decoders=decoders, read_config=read_config)
    except AssertionError:
        raise source.error(f"TFDS dataset {source.name} is not prepared in {dataset_builder.data_dir_root} (prepare "
                           "it with `tfds build`, or set the TFDS data_dir)") from None
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

    dataset = guarded(dataset.map(inputs), read, reading)
    try:
        num_examples = dataset_builder.info.splits[source.split].num_examples
    except (KeyError, ValueError):
        num_examples = None  # not prepared (or mocked): the splits are unknown
    num_classes = getattr(label_feature, "num_classes", None)
    names = tuple(getattr(label_feature, "names", None) or ()) if num_classes else ()
    return dataset, DataInfo(num_classes=num_classes, class_names=names, num_examples=num_examples)
