"""Learning-rate schedules and optimizers of `training.optimizers`, against Keras' own schedules as the oracle."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from spinenet_tf.training import config as config_lib
from spinenet_tf.training import optimizers


def _rates(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


def test_cosine_with_warmup_equals_keras_cosine_decay():
    steps = [0, 1, 50, 99, 100, 101, 400, 999, 1000, 1500]
    ours = optimizers.WarmupSchedule(0.4, 1000, "cosine", warmup_steps=100, warmup_learning_rate=0.01, alpha=0.1)
    # Keras: linear warm-up from initial_learning_rate to warmup_target, then cosine over decay_steps to alpha.
    keras_schedule = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=900, alpha=0.1, warmup_target=0.4,
                                                            warmup_steps=100)
    np.testing.assert_allclose(_rates(ours, steps), _rates(keras_schedule, steps), rtol=1e-5)


def test_step_decay_equals_keras_piecewise_constant_after_warmup():
    steps = [120, 949, 950, 951, 979, 980, 999]
    ours = optimizers.WarmupSchedule(0.32, 1000, "step", warmup_steps=100, warmup_learning_rate=0.0067,
                                     boundaries=[950, 980], decay_factor=0.1)
    # Keras' PiecewiseConstantDecay switches *after* a boundary step (step > b); ours, like Model Garden's
    # stepwise schedule, at it (step >= b): compare with boundaries one lower.
    piecewise = keras.optimizers.schedules.PiecewiseConstantDecay([949, 979], [0.32, 0.032, 0.0032])
    np.testing.assert_allclose(_rates(ours, steps), _rates(piecewise, steps), rtol=1e-5)


def test_linear_warmup_values():
    ours = optimizers.WarmupSchedule(0.32, 1000, "step", warmup_steps=2000 // 10, warmup_learning_rate=0.0067,
                                     boundaries=[950])
    # Model Garden's LinearWarmup: warmup_lr + step / warmup_steps * (lr - warmup_lr).
    expected = [0.0067 + s / 200 * (0.32 - 0.0067) for s in (0, 50, 100, 199)]
    np.testing.assert_allclose(_rates(ours, [0, 50, 100, 199]), expected, rtol=1e-5)
    assert float(ours(200)) == pytest.approx(0.32)


def test_schedule_round_trips_through_keras_serialization():
    ours = optimizers.WarmupSchedule(0.1, 500, "cosine", warmup_steps=10, alpha=0.0)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(ours))
    np.testing.assert_allclose(_rates(restored, [0, 5, 250, 500]), _rates(ours, [0, 5, 250, 500]))


def test_build_optimizer_kinds():
    sgd = optimizers.build_optimizer(config_lib.OptimizerConfig(optimizer="sgd", momentum=0.8), 100)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.8
    adamw = optimizers.build_optimizer(config_lib.OptimizerConfig(optimizer="adamw", weight_decay=0.05,
                                                                  gradient_clip_norm=10.0), 100)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.global_clipnorm == 10.0
    mixed = optimizers.build_optimizer(config_lib.OptimizerConfig(), 100, mixed_precision="float16")
    assert isinstance(mixed, keras.optimizers.LossScaleOptimizer)


def test_adamw_skips_batch_norm_and_bias_decay():
    layer_input = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 3, use_bias=True)(layer_input)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(layer_input, x)
    adamw = optimizers.build_optimizer(config_lib.OptimizerConfig(optimizer="adamw", weight_decay=0.1,
                                                                  learning_rate=0.5, schedule="constant"), 10)
    before = {w.path: w.numpy().copy() for w in model.trainable_weights}
    adamw.apply_gradients([(np.zeros(w.shape, "float32"), w) for w in model.trainable_weights])
    for weight in model.trainable_weights:  # zero gradients: only decoupled decay can move a weight
        moved = not np.allclose(weight.numpy(), before[weight.path])
        assert moved == weight.path.endswith("kernel"), weight.path

