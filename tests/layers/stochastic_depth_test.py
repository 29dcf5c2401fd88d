"""Tests of spinenet_tf/layers/stochastic_depth.py (timm's test_layers_drop.py pattern).

Drop-path (Huang et al., arXiv:1603.09382): per sample, the branch is kept with probability 1 - rate and scaled by
1 / (1 - rate); the identity at inference. Per-block rates follow Model Garden's
`get_stochastic_depth_rate` (`official/vision/modeling/layers/nn_layers.py`): block i of n gets rate * i / n.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import testing
from spinenet_tf.layers import StochasticDepth, stochastic_depth_rate_for_block


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _kept(y):
    """Per sample: True if any element survived (a dropped sample is all zeros)."""
    return np.any(y != 0, axis=tuple(range(1, y.ndim)))


def test_harness():
    testing.run_layer_test(StochasticDepth, dict(rate=0.3, seed=1), (4, 3, 3, 2), (4, 3, 3, 2),
                           expected_num_trainable_weights=0, expected_num_non_trainable_weights=0)


@pytest.mark.parametrize("training", [False, None])
def test_identity_at_inference(training):
    x = _random((64, 4, 4, 3))
    np.testing.assert_array_equal(_np(StochasticDepth(0.9, seed=0)(x, training=training)), x)


def test_rate_zero_is_identity_in_training():
    x = _random((64, 4, 4, 3))
    np.testing.assert_array_equal(_np(StochasticDepth(0.0)(x, training=True)), x)


def test_keep_ratio_and_scaling_in_training():
    rate, n = 0.3, 2000
    x = _random((n, 3, 3, 2)) + 10.0  # no zero inputs, so "all zeros" means "dropped"
    y = _np(StochasticDepth(rate, seed=7)(x, training=True))
    kept = _kept(y)
    # Binomial(2000, 0.7): standard deviation of the fraction ~0.010, so 0.04 is a ~4-sigma band.
    assert abs(kept.mean() - (1 - rate)) < 0.04, f"kept fraction {kept.mean():.3f}, expected 0.7"
    # All or nothing per sample, and survivors are scaled by exactly 1 / 0.7.
    np.testing.assert_array_equal(y[~kept], 0.0)
    np.testing.assert_allclose(y[kept], x[kept] / np.float32(1 - rate), rtol=1e-6, atol=0)


def test_masks_change_between_calls_eagerly_and_in_tf_function():
    x = np.ones((256, 2, 2, 1), "float32")
    layer = StochasticDepth(0.5, seed=3)
    eager = [_kept(_np(layer(x, training=True))) for _ in range(2)]
    assert not np.array_equal(*eager)
    # `fit` runs the layer inside a tf.function: the seed state must advance there too.
    step = tf.function(lambda t: layer(t, training=True))
    traced = [_kept(_np(step(x))) for _ in range(2)]
    assert not np.array_equal(*traced)
    assert all(0.35 < k.mean() < 0.65 for k in eager + traced)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_rate_outside_unit_interval_raises(rate):
    with pytest.raises(ValueError, match=rf"rate={rate}: must be in \[0, 1\)"):
        StochasticDepth(rate)
    with pytest.raises(ValueError, match=rf"stochastic_depth_rate={rate}: must be in \[0, 1\)"):
        stochastic_depth_rate_for_block(rate, 1, 16)


def test_rate_for_block_is_linear_in_block_number():
    # Model Garden's get_stochastic_depth_rate(init_rate, i, n) = init_rate * i / n
    # (`official/vision/modeling/layers/nn_layers.py`).
    for i in range(1, 17):
        assert stochastic_depth_rate_for_block(0.2, i, 16) == pytest.approx(0.2 * i / 16, rel=1e-12)
    assert stochastic_depth_rate_for_block(0.2, 16, 16) == pytest.approx(0.2)
    assert stochastic_depth_rate_for_block(0.0, 5, 16) == 0.0
