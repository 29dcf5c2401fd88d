"""What the readers share (`reading`): sharding and shuffling of cheap items, and the guarded decode step that
drops the examples its Python function marks bad and gives the rest the layout's static ranks."""

import numpy as np
import tensorflow as tf

from spinenet_tf.data import bad_data, reading


def _reading(task="classification", training=False, seed=None, input_context=None):
    return reading.Reading(task=task, training=training, seed=seed, input_context=input_context, num_classes=None,
                           stats=bad_data.DataStats("--x"))


def test_shards_are_disjoint_and_training_shuffles_reproducibly():
    items = tf.data.Dataset.range(10)
    assert list(reading.shard_and_shuffle(items, 10, _reading()).as_numpy_iterator()) == list(range(10))
    shards = [list(reading.shard_and_shuffle(items, 10, _reading(input_context=tf.distribute.InputContext(2, k, 1)))
                   .as_numpy_iterator()) for k in range(2)]
    assert shards == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    first, again = (list(reading.shard_and_shuffle(items, 10, _reading(training=True, seed=3)).as_numpy_iterator())
                    for _ in range(2))
    assert first == again and first != list(range(10)) and sorted(first) == list(range(10))


def test_guarded_keeps_the_good_examples_in_the_layout():
    def read(index):   # odd indices are "undecodable"
        if index % 2:
            return bad_data.skipped("classification")
        return True, np.full((2, 3, 3), index, np.uint8), np.int64(index)

    dataset = reading.guarded(tf.data.Dataset.range(5), read, _reading())
    assert dataset.element_spec == {"image": tf.TensorSpec([None, None, 3], tf.uint8),
                                    "label": tf.TensorSpec([], tf.int64)}
    assert [(int(e["label"]), int(e["image"][0, 0, 0])) for e in dataset.as_numpy_iterator()] == [(0, 0), (2, 2),
                                                                                                   (4, 4)]


def test_guarded_detection_examples_have_the_detection_layout():
    def read(index):
        boxes = np.array([[0.1, 0.2, 0.5, 0.6]], np.float32)
        return True, np.zeros((4, 4, 3), np.uint8), np.int64(index), boxes, np.array([1]), np.array([False])

    dataset = reading.guarded(tf.data.Dataset.range(2), read, _reading(task="detection"))
    assert dataset.element_spec["objects"] == {"bbox": tf.TensorSpec([None, 4], tf.float32),
                                               "label": tf.TensorSpec([None], tf.int64),
                                               "is_crowd": tf.TensorSpec([None], tf.bool)}
    assert [int(e["image/id"]) for e in dataset.as_numpy_iterator()] == [0, 1]
