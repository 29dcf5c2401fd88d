"""The `builtin:shapes[:SPLIT]` source: the generated shapes (`builtin_shapes`), generated as they are read.

Indices are sharded and shuffled before any example is generated, so skipped examples cost nothing; the examples
need no decoding, so there is no guarded step and nothing to skip or repair.
"""

from __future__ import annotations

import re

import tensorflow as tf

from spinenet_tf.data import builtin_shapes, builtin_shapes_dataset
from spinenet_tf.data.reading import DataInfo, Reading, Source, shard_and_shuffle


def split_range(source: Source) -> tuple[str, int, int]:
    """(split, start, stop) of a built-in split spec such as "train[:500]" (TFDS slicing); raises `source.error`
    on a bad split or an empty slice."""
    import tensorflow_datasets as tfds  # TFDS only where it is used: importing `sources` does not import it

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


def read(source: Source, reading: Reading) -> tuple[tf.data.Dataset, DataInfo]:
    """The source's examples in `reading.task`'s layout, and what it holds (six classes, category ids 1-6)."""
    split, start, stop = split_range(source)
    indices = shard_and_shuffle(tf.data.Dataset.range(start, stop), stop - start, reading)
    if reading.task != "classification":
        with_masks = reading.task == "instance_segmentation"
        features = builtin_shapes_dataset.detection_features_fn(split, with_masks=with_masks)
        keys = ("bbox", "label", "is_crowd") + (("segmentation",) if with_masks else ())

        def to_example(index):
            example = features(index)
            objects = example["objects"]
            return {"image": example["image"], "image/id": example["image/id"],
                    "objects": {key: objects[key] for key in keys}}
    else:
        to_example = builtin_shapes_dataset.classification_features_fn(split)
    dataset = indices.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=reading.deterministic)
    names = builtin_shapes.CLASS_NAMES
    return dataset, DataInfo(num_classes=len(names), class_names=names, num_examples=stop - start,
                             category_ids=tuple(range(1, len(names) + 1)))
