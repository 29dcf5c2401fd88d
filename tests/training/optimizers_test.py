"""Learning-rate schedules and optimizers of `training.optimizers`, against Keras' own schedules and optimizers as
the oracle (the fused AdamW / SGD: same numbers, checkpoints and slot names as Keras', smaller train graph)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from spinenet_tf.layers import keras_fit
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
    assert isinstance(sgd, optimizers.FusedSGD) and sgd.momentum == 0.8 and not sgd.nesterov
    assert isinstance(sgd, keras.optimizers.SGD)
    adamw = optimizers.build_optimizer(config_lib.OptimizerConfig(optimizer="adamw", weight_decay=0.05,
                                                                  gradient_clip_norm=10.0), 100)
    assert isinstance(adamw, optimizers.FusedAdamW) and adamw.global_clipnorm == 10.0
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == 0.05
    mixed = optimizers.build_optimizer(config_lib.OptimizerConfig(), 100, mixed_precision="float16")
    assert isinstance(mixed, keras.optimizers.LossScaleOptimizer)
    assert isinstance(mixed.inner_optimizer, optimizers.FusedSGD)


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



# --- The fused AdamW and SGD against Keras' own -------------------------------------------------------------------

STEPS = 5
# Betas whose 1 - beta is exact in float32: ResourceApplyAdam computes 1 - beta in float32, Keras in Python floats
# (FusedAdamW's docstring), so with these the two must agree to float rounding.
EXACT_BETAS = {"beta_1": 0.875, "beta_2": 1 - 2**-10}


def _small_model(dtype=None) -> keras.Model:
    """Conv (no bias) + batch norm (gamma, beta) + conv with bias + dense: decayed and excluded variables."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False, dtype=dtype)(inputs)
    x = keras.layers.BatchNormalization(dtype=dtype)(x)
    x = keras.layers.ReLU(dtype=dtype)(x)
    x = keras.layers.Conv2D(4, 3, padding="same", dtype=dtype)(x)
    x = keras.layers.GlobalAveragePooling2D(dtype=dtype)(x)
    return keras.Model(inputs, keras.layers.Dense(3, dtype=dtype)(x))


def _batches():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(STEPS, 4, 8, 8, 3)).astype("float32"),
            rng.normal(size=(STEPS, 4, 3)).astype("float32"))


def _schedule():
    return optimizers.WarmupSchedule(0.05, 10, "cosine", warmup_steps=2, warmup_learning_rate=0.01)


def _adamw(cls, **kwargs):
    optimizer = cls(_schedule(), weight_decay=0.1, global_clipnorm=1.0, **kwargs)
    optimizer.exclude_from_weight_decay(var_names=list(optimizers.NO_WEIGHT_DECAY))
    return optimizer


def _train_step(model, optimizer):
    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.cast(model(x, training=True), "float32") - y))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return step


def _train(optimizer, steps=range(STEPS), model=None, dtype=None):
    """The model's and optimizer's variables after `steps` steps (a list of numpy arrays), and the model."""
    model = model or _small_model(dtype)
    optimizer.build(model.trainable_variables)
    step = _train_step(model, optimizer)
    xs, ys = _batches()
    for i in steps:
        step(xs[i], ys[i])
    return [np.asarray(v.numpy(), "float64") for v in (*model.trainable_variables, *optimizer.variables)], model


def _assert_close(expected, actual, rtol):
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * 1e-6)


def _graph_ops(optimizer, dtype=None):
    model = _small_model(dtype)
    optimizer.build(model.trainable_variables)
    xs, ys = _batches()
    graph = _train_step(model, optimizer).get_concrete_function(xs[0], ys[0]).graph.as_graph_def()
    return [node.op for node in graph.node]


@pytest.mark.parametrize("betas", [EXACT_BETAS, {}], ids=["exact_betas", "default_betas"])
def test_fused_adamw_equals_keras_adamw(betas):
    keras_result, model = _train(_adamw(keras.optimizers.AdamW, **betas))
    fused_result, _ = _train(_adamw(optimizers.FusedAdamW, **betas))
    initial = [w.numpy() for w in _small_model().trainable_variables]
    assert all(not np.allclose(w, i) for w, i in zip(keras_result, initial)), "every weight must move"
    if betas:
        _assert_close(keras_result, fused_result, rtol=1e-6)
    else:
        # Keras' 1 - 0.999 = 0.001 against the op's float32 1 - 0.999 = 0.00099998713: second moments differ by
        # ~1.3e-5 relative. Compared relative to each tensor's scale.
        for e, a in zip(keras_result, fused_result):
            assert np.max(np.abs(a - e)) <= 1e-4 * np.max(np.abs(e))


@pytest.mark.parametrize("nesterov", [False, True])
def test_fused_sgd_equals_keras_sgd(nesterov):
    def sgd(cls):
        return cls(_schedule(), momentum=0.9, nesterov=nesterov, global_clipnorm=1.0)
    keras_result, _ = _train(sgd(keras.optimizers.SGD))
    fused_result, _ = _train(sgd(optimizers.FusedSGD))
    _assert_close(keras_result, fused_result, rtol=1e-6)
    plain_keras, _ = _train(keras.optimizers.SGD(_schedule()))
    plain_fused, _ = _train(optimizers.FusedSGD(_schedule()))
    _assert_close(plain_keras, plain_fused, rtol=1e-6)


def test_fused_graph_is_smaller_and_reads_the_schedule_once():
    counts = {}
    for name, optimizer in [("keras adamw", _adamw(keras.optimizers.AdamW)),
                            ("fused adamw", _adamw(optimizers.FusedAdamW)),
                            ("keras sgd", keras.optimizers.SGD(_schedule(), momentum=0.9, global_clipnorm=1.0)),
                            ("fused sgd", optimizers.FusedSGD(_schedule(), momentum=0.9, global_clipnorm=1.0))]:
        ops = _graph_ops(optimizer)
        counts[name] = (len(ops), ops.count("Cos"), ops.count("ResourceApplyAdam"),
                        ops.count("ResourceApplyKerasMomentum"))
    print("train-step graph (nodes, Cos, ResourceApplyAdam, ResourceApplyKerasMomentum):", counts)
    variables = len(_small_model().trainable_variables)
    assert counts["fused adamw"][0] < counts["keras adamw"][0] - 20 * variables
    assert counts["fused sgd"][0] < counts["keras sgd"][0]
    # The cosine schedule has one Cos: Keras' AdamW evaluates it again for each decayed variable, ours once.
    assert counts["fused adamw"][1:] == (1, variables, 0) and counts["keras adamw"][1] > 1
    assert counts["fused sgd"][1:] == (1, 0, variables)


def test_bfloat16_variables_take_the_keras_update():
    # ResourceApplyAdam would compute 1 - beta_2 in bfloat16, where 0.999 is 1: Keras' update must run instead.
    # SGD's op gives Keras' numbers in bfloat16 and stays fused.
    keras_adamw, _ = _train(_adamw(keras.optimizers.AdamW), dtype="bfloat16")
    fused_adamw, _ = _train(_adamw(optimizers.FusedAdamW), dtype="bfloat16")
    _assert_close(keras_adamw, fused_adamw, rtol=1e-6)
    assert "ResourceApplyAdam" not in _graph_ops(_adamw(optimizers.FusedAdamW), dtype="bfloat16")
    keras_sgd, _ = _train(keras.optimizers.SGD(_schedule(), momentum=0.9), dtype="bfloat16")
    fused_sgd, _ = _train(optimizers.FusedSGD(_schedule(), momentum=0.9), dtype="bfloat16")
    _assert_close(keras_sgd, fused_sgd, rtol=1e-6)
    assert "ResourceApplyKerasMomentum" in _graph_ops(optimizers.FusedSGD(_schedule(), momentum=0.9), "bfloat16")


def test_fused_adamw_with_loss_scaling_equals_keras():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        expected, _ = _train(keras.optimizers.LossScaleOptimizer(_adamw(keras.optimizers.AdamW, **EXACT_BETAS)))
        actual, _ = _train(keras.optimizers.LossScaleOptimizer(_adamw(optimizers.FusedAdamW, **EXACT_BETAS)))
    finally:
        keras.config.set_dtype_policy(policy)
    _assert_close(expected, actual, rtol=1e-6)


def test_fused_slot_names_and_keras_checkpoint_restore(tmp_path):
    # A checkpoint of Keras' AdamW restores into the fused one (same slots), and the fused one continues as Keras'.
    keras_optimizer = _adamw(keras.optimizers.AdamW, **EXACT_BETAS)
    _, keras_model = _train(keras_optimizer, steps=range(3))
    path = tf.train.Checkpoint(model=keras_model, optimizer=keras_optimizer).write(str(tmp_path / "keras"))
    same_model = _adamw(optimizers.FusedAdamW, **EXACT_BETAS)
    same_model.build(keras_model.trainable_variables)
    assert ([v.path.split("/", 1)[1] for v in same_model.variables]
            == [v.path.split("/", 1)[1] for v in keras_optimizer.variables])  # e.g. conv2d_kernel_momentum
    assert same_model.name.startswith("adam_w")  # Keras' default name, so the same variable paths
    fused_optimizer = _adamw(optimizers.FusedAdamW, **EXACT_BETAS)
    fused_model = _small_model()
    fused_optimizer.build(fused_model.trainable_variables)
    tf.train.Checkpoint(model=fused_model, optimizer=fused_optimizer).read(path).assert_consumed()
    assert int(fused_optimizer.iterations.numpy()) == 3
    _assert_close([v.numpy() for v in keras_optimizer.variables], [v.numpy() for v in fused_optimizer.variables],
                  rtol=0)
    expected, _ = _train(keras_optimizer, steps=range(3, STEPS), model=keras_model)
    actual, _ = _train(fused_optimizer, steps=range(3, STEPS), model=fused_model)
    _assert_close(expected, actual, rtol=1e-6)


@pytest.mark.parametrize("make", [lambda: _adamw(optimizers.FusedAdamW),
                                  lambda: optimizers.FusedSGD(_schedule(), momentum=0.9)], ids=["adamw", "sgd"])
def test_fused_checkpoint_round_trip(make, tmp_path):
    uninterrupted, _ = _train(make())
    first = make()
    _, model = _train(first, steps=range(2))
    path = tf.train.Checkpoint(model=model, optimizer=first).write(str(tmp_path / "fused"))
    second, restored_model = make(), _small_model()
    second.build(restored_model.trainable_variables)
    tf.train.Checkpoint(model=restored_model, optimizer=second).read(path).assert_consumed()
    resumed, _ = _train(second, steps=range(2, STEPS), model=restored_model)
    _assert_close(uninterrupted, resumed, rtol=1e-6)


def test_fused_optimizers_serialize_and_build_slots_at_compile():
    for optimizer in (_adamw(optimizers.FusedAdamW), optimizers.FusedSGD(_schedule(), momentum=0.9, nesterov=True)):
        restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert type(restored) is type(optimizer)
        assert restored.get_config() == optimizer.get_config()
        model = _small_model()
        model.compile(optimizer=optimizer, loss="mse")
        keras_fit.build_slots(model)
        assert optimizer.built and len(optimizer.variables) > len(model.trainable_variables)
