"""`tf.train.Checkpoint` saves and restores every weight: sublayers in lists and dicts (Keras 3 leaves them out of
checkpoints, `spinenet_tf.layers.tracking`) in a toy layer and in every model family, through
`spinenet_tf.checkpoints.restore_model`."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import spinenet_tf
from spinenet_tf import checkpoints
from spinenet_tf.layers.tracking import CheckpointCollections


class _Collections(CheckpointCollections, keras.layers.Layer):
    """Sublayers only in a list (grown in place), a dict with int keys and a nested list."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.chain = []
        self.chain += [keras.layers.Dense(3, name="a"), keras.layers.Dense(3, name="b")]
        self.by_level = {3: keras.layers.Dense(3, name="c")}
        self.nested = [[keras.layers.Dense(3, name="d")], [keras.layers.BatchNormalization(name="e")]]

    def call(self, x):
        for layer in [*self.chain, self.by_level[3], self.nested[0][0], self.nested[1][0]]:
            x = layer(x)
        return x


def _saved_model_variables(path: str) -> list[str]:
    return [name for name, _ in tf.train.list_variables(path) if name.startswith("model/")]


def _perturb(model: keras.Model) -> None:
    rng = np.random.default_rng(0)
    for weight in model.weights:
        weight.assign(weight.numpy() + rng.normal(0.5, 0.1, weight.shape).astype(weight.dtype))


def _assert_round_trip(model: keras.Model, fresh: keras.Model, tmp_path) -> None:
    _perturb(model)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    assert len(_saved_model_variables(path)) == len(model.weights)
    checkpoints.restore_model(fresh, checkpoint=path)
    differ = [w.path for w, v in zip(model.weights, fresh.weights) if not np.array_equal(w.numpy(), v.numpy())]
    assert not differ, f"{len(differ)} of {len(model.weights)} weights not restored: {differ[:5]}"


def test_sublayers_in_lists_and_dicts_are_checkpointed(tmp_path):
    model, fresh = (keras.Sequential([keras.Input([3]), _Collections()]) for _ in range(2))
    assert len(model.weights) == 4 * 2 + 4  # four Dense (kernel, bias), one batch norm (4 variables)
    _assert_round_trip(model, fresh, tmp_path)


TINY = {"filter_size_scale": 0.25, "endpoints_num_filters": 8, "num_filters": 8}


@pytest.mark.parametrize("name, build", [
    ("retinanet-spinenet-mobile-49xs", lambda name: spinenet_tf.build_detector(
        name, num_classes=6, input_shape=(128, 128), **TINY)),
    ("retinanet-spinenet-49s", lambda name: spinenet_tf.build_detector(
        name, num_classes=6, input_shape=(128, 128), **TINY)),
    ("maskrcnn-spinenet-49s", lambda name: spinenet_tf.build_detector(name, num_classes=7, input_shape=(128, 128))),
    ("classifier-spinenet-mobile-49xs", lambda name: spinenet_tf.build_classifier(
        name, num_classes=6, input_shape=(128, 128))),
])
def test_every_weight_of_each_model_family_is_checkpointed(name, build, tmp_path):
    _assert_round_trip(build(name), build(name), tmp_path)
