"""The models' shared `fit` parts (`spinenet_tf.layers.keras_fit`): the L2 term counts kernels only; optimizer
slots exist right after `compile()`."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from spinenet_tf.layers import keras_fit


def _conv_model() -> keras.Model:
    layer_input = keras.Input((4, 4, 3))
    return keras.Model(layer_input, keras.layers.Conv2D(2, 1, use_bias=True, bias_initializer="ones")(layer_input))


def test_l2_loss_counts_kernels_only():
    model = _conv_model()
    kernel = model.trainable_weights[0].numpy()
    assert float(keras_fit.l2_loss(model.trainable_weights, 0.2)) == pytest.approx(0.1 * np.sum(kernel ** 2),
                                                                                     rel=1e-6)
    assert float(keras_fit.l2_loss(model.trainable_weights, 0.0)) == 0.0


def test_build_slots_creates_the_optimizer_variables_once():
    model = _conv_model()
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), loss="mse")
    assert not model.optimizer.built
    keras_fit.build_slots(model)
    assert model.optimizer.built
    slots = list(model.optimizer.variables)
    assert any("momentum" in v.path for v in slots)
    keras_fit.build_slots(model)  # a second call changes nothing
    assert list(model.optimizer.variables) == slots
