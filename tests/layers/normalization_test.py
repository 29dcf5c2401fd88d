"""Tests of spinenet_tf/layers/normalization.py: our fused BatchNormalization against Keras 3's own layer.

The expectation is always Keras' stock `keras.layers.BatchNormalization` with the same weights and inputs (and, for
the moving variance, tf_keras' fused layer, Model Garden's, whose semantics differ by Bessel's correction).
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import testing
from spinenet_tf.layers import normalization
from spinenet_tf.layers.normalization import BatchNormalization


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x)).astype("float32")


def _inputs(shape, seed=0):
    # Mean 2, std 3: far from the initial moving statistics (0, 1), so a wrong update shows.
    return np.random.default_rng(seed).normal(2.0, 3.0, shape).astype("float32")


def _pair(shape, dtype=None, **kwargs):
    """Ours and Keras' stock layer, built, with the same non-trivial gamma, beta and moving statistics."""
    layers = [BatchNormalization(dtype=dtype, **kwargs), keras.layers.BatchNormalization(dtype=dtype, **kwargs)]
    channels = shape[-1] if kwargs.get("axis", -1) == -1 else shape[kwargs["axis"]]
    for layer in layers:
        layer.build(shape)
        for weight, values in ((layer.gamma, np.linspace(0.5, 2.0, channels)),
                               (layer.beta, np.linspace(-1.0, 1.0, channels)),
                               (layer.moving_mean, np.linspace(-0.3, 0.3, channels)),
                               (layer.moving_variance, np.linspace(0.5, 1.5, channels))):
            if weight is not None:
                weight.assign(values.astype("float32"))
    return layers


def _train_step(layer, x, **call_kwargs):
    """Training-mode output and the gradients of a non-symmetric loss wrt the input, gamma and beta."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True, **call_kwargs)
        weights = tf.sin(tf.range(tf.size(y), dtype=tf.float32))
        loss = tf.reduce_sum(tf.reshape(tf.cast(y, tf.float32), [-1]) * weights)
    grads = tape.gradient(loss, [x] + [w for w in (layer.gamma, layer.beta) if w is not None])
    return y, grads


def _assert_close(actual, expected, rtol=1e-5, what=""):
    actual, expected = _np(actual), _np(expected)
    # atol relative to the tensor's scale: sums of many terms cancel to near zero in places.
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max(), err_msg=what)


def _op_types(graph):
    types = {node.op for node in graph.as_graph_def().node}
    for function in graph.as_graph_def().library.function:
        types |= {node.op for node in function.node_def}
    return types


def test_harness():
    testing.run_layer_test(BatchNormalization, dict(momentum=0.9, epsilon=1e-4), (4, 5, 5, 3), (4, 5, 5, 3),
                           expected_num_trainable_weights=2, expected_num_non_trainable_weights=2)


@pytest.mark.parametrize("shape, momentum, epsilon", [
    ((4, 5, 6, 7), 0.99, 1e-3),   # Model Garden's defaults
    ((2, 3, 3, 5), 0.9, 1e-5),
    ((1, 1, 1, 4), 0.9, 1e-3),    # one value per channel: variance 0, TF's n - 1 >= 1 guard
    ((16, 2, 2, 24), 0.97, 1e-3),  # P7 of the demo: few values per channel, where Bessel's factor is largest
])
def test_training_matches_keras(shape, momentum, epsilon):
    ours, stock = _pair(shape, momentum=momentum, epsilon=epsilon)
    for step in range(3):  # three updates, so the moving averages compound
        x = _inputs(shape, seed=step)
        (y, grads), (y_ref, grads_ref) = _train_step(ours, x), _train_step(stock, x)
        _assert_close(y, y_ref, what="output")
        for name, grad, grad_ref in zip(("d/dx", "d/dgamma", "d/dbeta"), grads, grads_ref):
            _assert_close(grad, grad_ref, what=name)
        _assert_close(ours.moving_mean, stock.moving_mean, what=f"moving_mean after step {step}")
        _assert_close(ours.moving_variance, stock.moving_variance, what=f"moving_variance after step {step}")


def test_training_with_unknown_batch_in_tf_function():
    shape = (6, 4, 4, 3)
    ours, stock = _pair(shape, momentum=0.9)
    spec = tf.TensorSpec([None, 4, 4, 3], tf.float32)
    step_ours = tf.function(lambda x: _train_step(ours, x), input_signature=[spec])
    step_stock = tf.function(lambda x: _train_step(stock, x), input_signature=[spec])
    for seed, batch in ((0, 6), (1, 2)):
        x = _inputs((batch, 4, 4, 3), seed)
        (y, grads), (y_ref, grads_ref) = step_ours(x), step_stock(x)
        _assert_close(y, y_ref)
        for grad, grad_ref in zip(grads, grads_ref):
            _assert_close(grad, grad_ref)
    _assert_close(ours.moving_mean, stock.moving_mean)
    _assert_close(ours.moving_variance, stock.moving_variance)


def test_training_and_inference_use_the_fused_ops():
    layer = BatchNormalization()
    layer.build((2, 4, 4, 3))
    train = tf.function(lambda x: _train_step(layer, x)).get_concrete_function(tf.TensorSpec((2, 4, 4, 3)))
    infer = tf.function(lambda x: layer(x, training=False)).get_concrete_function(tf.TensorSpec((2, 4, 4, 3)))
    assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= _op_types(train.graph)
    assert "FusedBatchNormV3" in _op_types(infer.graph)
    assert "Rsqrt" not in _op_types(train.graph) | _op_types(infer.graph), "Keras' unfused path was taken"


@pytest.mark.parametrize("training", [False, None])
def test_inference_matches_keras(training):
    ours, stock = _pair((3, 4, 4, 5))
    x = _inputs((3, 4, 4, 5))
    _assert_close(ours(x, training=training), stock(x, training=training))
    _assert_close(ours.moving_mean, np.linspace(-0.3, 0.3, 5), what="inference moved the statistics")


def test_frozen_layer_in_training_normalises_with_moving_statistics():
    ours, stock = _pair((3, 4, 4, 5))
    ours.trainable = stock.trainable = False
    x = _inputs((3, 4, 4, 5))
    _assert_close(ours(x, training=True), stock(x, training=True))
    _assert_close(ours(x, training=True), stock(x, training=False))
    _assert_close(ours.moving_variance, np.linspace(0.5, 1.5, 5), what="a frozen layer moved its statistics")


@pytest.mark.parametrize("policy, rtol", [("mixed_float16", 2e-3), ("mixed_bfloat16", 2e-2)])
def test_mixed_precision_training_matches_keras(policy, rtol):
    shape = (4, 6, 6, 8)
    ours, stock = _pair(shape, dtype=policy, momentum=0.9)
    x = tf.cast(_inputs(shape), keras.DTypePolicy(policy).compute_dtype)
    (y, grads), (y_ref, grads_ref) = _train_step(ours, x), _train_step(stock, x)
    assert y.dtype == y_ref.dtype == x.dtype
    assert [g.dtype for g in grads] == [g.dtype for g in grads_ref] == [x.dtype, tf.float32, tf.float32]
    assert ours.moving_mean.dtype == ours.moving_variance.dtype == "float32"
    _assert_close(y, y_ref, rtol=rtol, what="output")
    for name, grad, grad_ref in zip(("d/dx", "d/dgamma", "d/dbeta"), grads, grads_ref):
        assert np.all(np.isfinite(_np(grad))), name
        _assert_close(grad, grad_ref, rtol=rtol, what=name)
    # Both layers compute the statistics in float32 from the same half-precision inputs.
    _assert_close(ours.moving_mean, stock.moving_mean, what="moving_mean")
    _assert_close(ours.moving_variance, stock.moving_variance, what="moving_variance")


@pytest.mark.parametrize("kwargs, shape, use_mask", [
    (dict(), (4, 6, 3), True),                  # masks: Keras' masked moments
    (dict(), (4, 6, 3), False),                 # 3-D
    (dict(axis=1), (4, 3, 5, 5), False),        # channels first
    (dict(center=False), (4, 5, 5, 3), False),
    (dict(scale=False), (4, 5, 5, 3), False),
    (dict(renorm=True), (4, 5, 5, 3), False),
])
def test_other_configurations_take_keras_path(kwargs, shape, use_mask):
    ours, stock = _pair(shape, momentum=0.9, **kwargs)
    call_kwargs = {"mask": tf.constant(np.arange(np.prod(shape[:-1])).reshape(shape[:-1]) % 3 > 0)} if use_mask else {}
    x = _inputs(shape)
    (y, grads), (y_ref, grads_ref) = _train_step(ours, x, **call_kwargs), _train_step(stock, x, **call_kwargs)
    _assert_close(y, y_ref)
    for grad, grad_ref in zip(grads, grads_ref):
        _assert_close(grad, grad_ref)
    _assert_close(ours.moving_variance, stock.moving_variance)
    _assert_close(ours(x, training=False), stock(x, training=False))


@pytest.mark.oracle
def test_moving_variance_differs_from_tf_keras_fused_by_bessels_factor():
    # NOTE: tf_keras' fused layer (Model Garden's) averages the Bessel-corrected batch variance; Keras 3, and we,
    # the biased one. Outputs and gradients agree; the variance update differs by exactly n / (n - 1).
    import tf_keras

    shape, momentum = (4, 3, 3, 5), 0.9
    n = 4 * 3 * 3
    ours, _ = _pair(shape, momentum=momentum)
    theirs = tf_keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-3, fused=True)
    theirs.build(shape)
    theirs.set_weights([_np(w) for w in (ours.gamma, ours.beta, ours.moving_mean, ours.moving_variance)])
    old = np.linspace(0.5, 1.5, 5)
    x = _inputs(shape)
    (y, grads), (y_ref, grads_ref) = _train_step(ours, x), _train_step(theirs, x)
    _assert_close(y, y_ref)
    for grad, grad_ref in zip(grads, grads_ref):
        _assert_close(grad, grad_ref)
    _assert_close(ours.moving_mean, theirs.moving_mean)
    ours_step = _np(ours.moving_variance) - momentum * old
    theirs_step = _np(theirs.moving_variance) - momentum * old
    _assert_close(theirs_step, ours_step * n / (n - 1))
    _assert_close(ours_step, (1 - momentum) * x.var(axis=(0, 1, 2)), what="not the biased batch variance")


_SYNC_SCRIPT = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                               [tf.config.LogicalDeviceConfiguration()] * 2)
    from spinenet_tf.layers.normalization import batch_norm

    x = np.random.default_rng(0).normal(2.0, 3.0, (8, 4, 4, 3)).astype("float32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        synced = batch_norm(momentum=0.9, synchronized=True, name="synced")
        synced.build(x.shape)
    local = batch_norm(momentum=0.9, name="local")
    local.build(x.shape)

    @tf.function
    def replica_step(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            y = synced(images, training=True)
            loss = tf.reduce_sum(tf.reshape(y, [-1]) * tf.sin(tf.range(tf.size(y), dtype=tf.float32)) ** 2)
        return y, tape.gradient(loss, [images, synced.gamma])

    halves = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(x).unbatch().batch(8)))
    y_sync, (dx_sync, dgamma_sync) = strategy.run(replica_step, args=(next(halves),))
    y_sync, dx_sync = (np.concatenate([t.numpy() for t in strategy.experimental_local_results(v)])
                       for v in (y_sync, dx_sync))
    dgamma_sync = strategy.reduce("SUM", dgamma_sync, axis=None).numpy()
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        # Two replicas of 4: the same per-replica sin weights as above.
        y = local(xt, training=True)
        weights = tf.tile(tf.sin(tf.range(4 * 4 * 4 * 3, dtype=tf.float32)), [2])
        loss = tf.reduce_sum(tf.reshape(y, [-1]) * weights ** 2)
    dx, dgamma = (g.numpy() for g in tape.gradient(loss, [xt, local.gamma]))
    np.testing.assert_allclose(y_sync, y.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx_sync, dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dgamma_sync, dgamma, rtol=1e-4, atol=1e-4)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(getattr(synced, name).numpy(), getattr(local, name).numpy(), rtol=1e-5,
                                   err_msg=name)
    print("SYNC OK")
""")


def test_synchronized_over_two_replicas_equals_fused_on_the_whole_batch():
    # A subprocess, because the two logical CPUs must be configured before TensorFlow's devices are initialised.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", _SYNC_SCRIPT], capture_output=True, text=True, timeout=300,
                            env=env, cwd=os.path.dirname(os.path.dirname(os.path.dirname(normalization.__file__))))
    assert result.returncode == 0 and "SYNC OK" in result.stdout, result.stderr[-3000:]


# --- swish ------------------------------------------------------------------------------------------------------

def test_swish_is_keras_silu_with_a_smaller_gradient_graph(tmp_path):
    x = tf.constant(np.random.default_rng(0).normal(0.0, 4.0, (4096,)).astype("float32"))
    np.testing.assert_array_equal(normalization.swish(x).numpy(), keras.activations.silu(x).numpy())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours, keras_silu = normalization.swish(x), keras.activations.silu(x)
    np.testing.assert_allclose(tape.gradient(ours, x), tape.gradient(keras_silu, x), rtol=1e-5, atol=2e-7)

    def gradient_nodes(activation):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = activation(x)
            return tape.gradient(y, x)
        return len(step.get_concrete_function(tf.TensorSpec([8], tf.float32)).graph.as_graph_def().node)

    assert gradient_nodes(normalization.swish) < gradient_nodes(keras.activations.silu) - 5

    # The layer: saved and loaded as swish.
    model = keras.Sequential([keras.Input((8,)), normalization.activation_layer("swish", layer_name="act")])
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").get_layer("act").activation is normalization.swish
