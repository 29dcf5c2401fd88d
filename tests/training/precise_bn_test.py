"""Precise batch norm: the moving statistics become the plain average of the batch statistics (numpy golden);
nothing else changes; frozen layers and bad arguments."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from spinenet_tf.layers import normalization, precise_bn


def _model(frozen_second: bool = False) -> keras.Model:
    """conv -> our fused BatchNormalization -> conv -> Keras' own BatchNormalization (its non-fused path)."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input([8, 8, 3])
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    first = normalization.batch_norm(momentum=0.99, name="bn1")
    x = first(x)
    x = keras.layers.Conv2D(5, 1, name="conv2")(keras.layers.ReLU()(x))
    second = keras.layers.BatchNormalization(momentum=0.9, name="bn2")
    second.trainable = not frozen_second
    outputs = second(x)
    return keras.Model(inputs, outputs, name="tiny")


def _batches(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(loc=i, scale=1 + i, size=[4, 8, 8, 3]).astype(np.float32) for i in range(count)]


def _expected_statistics(model: keras.Model, layer_name: str, batches) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean over batches of each batch's mean and biased variance of the layer's input, in numpy.

    The layer's input does not depend on its own statistics in training mode when it is the first batch-norm
    layer; for the second one its input depends on bn1's *batch* statistics only (training mode), also fixed."""
    layer = model.get_layer(layer_name)
    probe = keras.Model(model.inputs[0], layer.input)
    means, variances = [], []
    for batch in batches:
        values = np.asarray(probe(batch, training=True)).reshape(-1, layer.input.shape[-1]).astype(np.float64)
        means.append(values.mean(axis=0))
        variances.append(values.var(axis=0))
    return np.mean(means, axis=0), np.mean(variances, axis=0)


def test_moving_statistics_become_the_average_of_batch_statistics():
    model = _model()
    batches = _batches(5)
    expected = {name: _expected_statistics(model, name, batches[:3]) for name in ("bn1", "bn2")}
    weights_before = [w.numpy() for w in model.trainable_weights]

    assert precise_bn.reestimate(model, iter(batches), num_batches=3) == 3

    for name, (mean, variance) in expected.items():
        layer = model.get_layer(name)
        np.testing.assert_allclose(np.asarray(layer.moving_mean), mean, rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(np.asarray(layer.moving_variance), variance, rtol=1e-4, atol=1e-5, err_msg=name)
    assert model.get_layer("bn1").momentum == 0.99 and model.get_layer("bn2").momentum == 0.9
    for before, after in zip(weights_before, model.trainable_weights):
        np.testing.assert_array_equal(before, np.asarray(after))


def test_a_forward_hook_runs_the_pass_on_other_items():
    # As Mask R-CNN does: the items are steps, the hook runs the training path on whatever it needs.
    model = _model()
    batches = _batches(3)
    mean, variance = _expected_statistics(model, "bn2", batches)
    stacked = tf.constant(np.stack(batches))
    assert precise_bn.reestimate(model, range(5), num_batches=3,
                                 forward=lambda step: model(tf.gather(stacked, step), training=True)) == 3
    np.testing.assert_allclose(np.asarray(model.get_layer("bn2").moving_mean), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.get_layer("bn2").moving_variance), variance, rtol=1e-4, atol=1e-5)


def test_fewer_batches_than_asked_uses_them_all():
    model = _model()
    batches = _batches(2)
    mean, _ = _expected_statistics(model, "bn1", batches)
    assert precise_bn.reestimate(model, batches, num_batches=10) == 2
    np.testing.assert_allclose(np.asarray(model.get_layer("bn1").moving_mean), mean, rtol=1e-4, atol=1e-5)


def test_frozen_layer_keeps_its_statistics():
    model = _model(frozen_second=True)
    frozen = model.get_layer("bn2")
    frozen.moving_mean.assign(np.full([5], 7.0, np.float32))
    precise_bn.reestimate(model, _batches(2), num_batches=2)
    np.testing.assert_array_equal(np.asarray(frozen.moving_mean), np.full([5], 7.0, np.float32))
    assert not np.allclose(np.asarray(model.get_layer("bn1").moving_mean), 0.0)


def test_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="num_batches=0, must be >= 1"):
        precise_bn.reestimate(model, _batches(1), num_batches=0)
    with pytest.raises(ValueError, match="no input batch"):
        precise_bn.reestimate(model, [], num_batches=2)
    plain = keras.Sequential([keras.Input([8, 8, 3]), keras.layers.Conv2D(2, 1)], name="plain")
    with pytest.raises(ValueError, match="plain has no trainable BatchNormalization layer"):
        precise_bn.reestimate(plain, _batches(1), num_batches=1)


def test_trainer_reestimates_on_training_batches(tmp_path):
    from spinenet_tf.training import config as config_lib, loop

    config = config_lib.TrainConfig(
        task="detection", model="retinanet-spinenet-mobile-49xs", model_dir=str(tmp_path), image_size=(128, 128),
        model_overrides={"filter_size_scale": 0.25, "endpoints_num_filters": 8, "num_filters": 8}, batch_size=2,
        train_steps=1, precise_bn_batches=2,
        input=config_lib.InputConfig(train_data="builtin:shapes:train[:8]", eval_data="builtin:shapes:validation",
                                     shuffle_buffer=8)).validate()
    trainer = loop.Trainer(config, flags_text=None)
    layers = precise_bn.batch_norm_layers(trainer.model)
    assert len(layers) > 50  # backbone and head, nested models included
    assert trainer.reestimate_batch_norm() == 2
    assert all(np.any(np.asarray(layer.moving_mean) != 0.0) for layer in layers[:5])
