"""The TFDS builder `builtin_shapes` (`builtin_shapes_tfds`): `tfds.load` prepares it and yields the generator's
examples in index order; the registered configs are the documented defaults."""

import numpy as np
import tensorflow_datasets as tfds

import data_testing
from spinenet_tf.data import builtin_shapes as bs
from spinenet_tf.data import builtin_shapes_tfds

SIZE = 256


def test_tfds_load_builds_and_matches_generate_example(tmp_path):
    config = builtin_shapes_tfds.BuiltinShapesConfig(name="detection_tiny", num_train=4, num_validation=2)
    train, info = tfds.load("builtin_shapes", split="train", data_dir=str(tmp_path), with_info=True,
                            builder_kwargs={"config": config})
    assert info.splits["train"].num_examples == 4 and info.splits["validation"].num_examples == 2
    assert info.features["objects"]["label"].names == list(bs.CLASS_NAMES)
    for index, element in enumerate(train.as_numpy_iterator()):  # disable_shuffling: index order
        data_testing.assert_builtin_features(element, index, "train")


def test_tfds_classification_config(tmp_path):
    config = builtin_shapes_tfds.BuiltinShapesConfig(name="classification_tiny", task="classification", num_train=3,
                                    num_validation=1)
    pairs = tfds.load("builtin_shapes", split="train", data_dir=str(tmp_path), as_supervised=True,
                      builder_kwargs={"config": config})
    for index, (image, label) in enumerate(pairs.as_numpy_iterator()):
        expected = bs.generate_classification_example(index, "train")
        assert label == expected["label"]
        np.testing.assert_array_equal(image, expected["image"])


def test_registered_configs_are_the_documented_defaults(tmp_path):
    for name in ("detection", "classification"):
        builder = tfds.builder(f"builtin_shapes/{name}", data_dir=str(tmp_path))
        config = builder.builder_config
        assert (config.task, config.image_size, config.num_train, config.num_validation) == (
            name, (SIZE, SIZE), bs.SPLIT_SIZES["train"], bs.SPLIT_SIZES["validation"])
        assert str(builder.version) == "1.0.0"
