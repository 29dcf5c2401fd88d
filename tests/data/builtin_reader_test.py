"""The `builtin:shapes` source (`builtin_reader`): the generator's examples with TFDS slicing, its classification
examples, and a training order that is shuffled reproducibly and sharded disjointly."""

import numpy as np
import tensorflow as tf

import data_testing
from spinenet_tf.data import builtin_shapes as bs
from spinenet_tf.data import builtin_reader, reading, sources

BUILTIN_SIZE = data_testing.BUILTIN_SIZE


def test_builtin_detection_is_the_generator_with_slicing():
    source = sources.parse("builtin:shapes:validation[2:5]")
    assert (source.kind, source.name, source.split) == ("builtin", "shapes", "validation[2:5]")
    loaded = sources.load(source, "detection", training=False)
    data_testing.assert_detection_layout(loaded.dataset)
    examples = data_testing.examples(loaded.dataset)
    assert len(examples) == 3
    for index, example in zip(range(2, 5), examples):
        data_testing.assert_matches_generator(example, index, size=BUILTIN_SIZE)
    assert loaded.info == reading.DataInfo(num_classes=6, class_names=bs.CLASS_NAMES, num_examples=3,
                                           category_ids=(1, 2, 3, 4, 5, 6))
    assert loaded.stats.summary() == ""


def test_builtin_defaults_to_train_and_accepts_val():
    assert sources.parse("builtin:shapes").split == "train"
    assert sources.load(sources.parse("builtin:shapes"), "detection", training=False).info.num_examples == 2000
    loaded = sources.load(sources.parse("builtin:shapes:val[:2]"), "detection", training=False)
    examples = data_testing.examples(loaded.dataset)
    assert [int(e["image/id"]) for e in examples] == [10_000_001, 10_000_002]


def test_builtin_classification_is_the_generator():
    loaded = sources.load(sources.parse("builtin:shapes:train[:3]"), "classification", training=False)
    data_testing.assert_classification_layout(loaded.dataset)
    for index, example in enumerate(data_testing.examples(loaded.dataset)):
        expected = bs.generate_classification_example(index, "train")
        np.testing.assert_array_equal(example["image"], expected["image"])
        assert example["label"] == expected["label"]


def test_training_order_is_shuffled_reproducibly_and_shards_are_disjoint():
    source = sources.parse("builtin:shapes:validation[:12]")

    def order(**kwargs):
        dataset = sources.load(source, "detection", **kwargs).dataset
        return [int(e["image/id"]) for e in dataset.as_numpy_iterator()]

    plain = order(training=False)
    assert plain == list(range(10_000_001, 10_000_013))
    first, again = order(training=True, seed=5), order(training=True, seed=5)
    assert first == again and first != plain and sorted(first) == plain
    shards = [order(training=True, seed=5, input_context=tf.distribute.InputContext(2, k, 1)) for k in range(2)]
    assert sorted(shards[0] + shards[1]) == plain and not set(shards[0]) & set(shards[1])


def test_split_range_reads_tfds_slicing_of_the_generated_splits():
    def split_range(split):
        return builtin_reader.split_range(reading.Source(spec=f"builtin:shapes:{split}", kind="builtin", split=split))

    assert split_range("val[2:5]") == ("validation", 2, 5)
    assert split_range("train[-10:]") == ("train", 1990, 2000)
    assert split_range("validation[:10%]") == ("validation", 0, 20)
