"""The built-in shapes as tf.data (`builtin_shapes_dataset`): the TFDS `coco/2017` layout (TFDS's own COCO
builder is the oracle), and the generator's examples in index order."""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import data_testing
from spinenet_tf.data import builtin_shapes as bs
from spinenet_tf.data import builtin_shapes_dataset

SIZE = 256


def _flatten(nested, prefix=""):
    if isinstance(nested, dict):
        return {path: leaf for key, value in nested.items()
                for path, leaf in _flatten(value, f"{prefix}/{key}").items()}
    return {prefix: nested}


def test_as_dataset_has_the_tfds_coco_2017_layout(tmp_path):
    # The oracle is TFDS's own COCO builder (its features come from code; nothing is downloaded).
    coco_info = tfds.builder("coco/2017", data_dir=str(tmp_path)).info.features.get_tensor_info()
    spec = builtin_shapes_dataset.as_dataset("train", num_examples=2).element_spec
    flat_coco, flat_ours = _flatten(coco_info), _flatten(spec)
    assert flat_ours.keys() == flat_coco.keys()
    for path, ours in flat_ours.items():
        assert ours.dtype == flat_coco[path].dtype, path
        assert ours.shape.rank == len(flat_coco[path].shape), path


def test_as_dataset_yields_generate_example_in_index_order():
    dataset = builtin_shapes_dataset.as_dataset("validation", num_examples=3, with_masks=True)
    assert dataset.cardinality() == 3
    for index, element in enumerate(dataset.as_numpy_iterator()):
        data_testing.assert_builtin_features(element, index, "validation")


def test_as_classification_dataset_yields_one_label_per_image():
    dataset = builtin_shapes_dataset.as_classification_dataset("validation", num_examples=5)
    assert dataset.element_spec == {"image": tf.TensorSpec([SIZE, SIZE, 3], tf.uint8),
                                    "label": tf.TensorSpec([], tf.int64)}
    for index, element in enumerate(dataset.as_numpy_iterator()):
        expected = bs.generate_classification_example(index, "validation")
        assert element["label"] == expected["label"]
        np.testing.assert_array_equal(element["image"], expected["image"])
