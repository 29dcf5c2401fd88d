"""Tests of spinenet_tf/layers/resample.py: NearestUpsampling, CrossScaleResample, MobileResample.

Expected structures come from Model Garden's `official/vision/modeling/backbones/spinenet.py`
(`_resample_with_alpha`: 1x1 narrowing conv + BN + act; down: one 3x3/2 conv + BN + act then 3x3/2 max-pools until
the level matches; up: nearest; then 1x1 conv + BN with no activation) and
`official/vision/modeling/backbones/spinenet_mobile.py` (`_resample_with_sepconv`: no narrowing conv; one depthwise
3x3/2 + BN + act per level down, nearest up, then 1x1 conv + BN).
"""

import keras
import numpy as np
import pytest

import testing
from spinenet_tf.layers import CrossScaleResample, MobileResample, NearestUpsampling


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _layers_of(layer, cls):
    return [sub for sub in testing.walk_layers(layer) if type(sub) is cls]


# --- NearestUpsampling -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_nearest_upsampling_equals_np_repeat(scale):
    x = _random((2, 3, 5, 4))
    expected = np.repeat(np.repeat(x, scale, axis=1), scale, axis=2)
    np.testing.assert_array_equal(_np(NearestUpsampling(scale)(x)), expected)


def test_nearest_upsampling_with_unknown_spatial_size():
    # The dynamic-shape path (used by backbones built with input_shape=(None, None, 3)).
    inputs = keras.Input(shape=(None, None, 3))
    model = keras.Model(inputs, NearestUpsampling(4)(inputs))
    assert tuple(model.output.shape) == (None, None, None, 3)
    for shape in [(1, 2, 3, 3), (2, 5, 1, 3)]:
        x = _random(shape)
        np.testing.assert_array_equal(_np(model(x)), np.repeat(np.repeat(x, 4, axis=1), 4, axis=2))


def test_nearest_upsampling_harness():
    testing.run_layer_test(NearestUpsampling, dict(scale=2), (2, 4, 3, 5), (2, 8, 6, 5),
                           expected_num_trainable_weights=0, expected_num_non_trainable_weights=0)


@pytest.mark.parametrize("scale", [0, -2, 1.5])
def test_nearest_upsampling_rejects_bad_scale(scale):
    with pytest.raises(ValueError, match=f"scale={scale}: must be a positive integer"):
        NearestUpsampling(scale)


# --- CrossScaleResample ------------------------------------------------------------------------------------------

# Weight counts: trainable = one kernel per conv (no biases) + gamma/beta per BN; non-trainable = 2 statistics per BN.
@pytest.mark.parametrize("kwargs, in_shape, out_shape, trainable, non_trainable", [
    (dict(level_shift=2, narrow_filters=4, out_filters=12), (2, 16, 16, 8), (2, 4, 4, 12), 3 + 3 * 2, 3 * 2),
    (dict(level_shift=1, narrow_filters=4, out_filters=12, activation="swish"), (2, 16, 16, 8), (2, 8, 8, 12),
     3 + 3 * 2, 3 * 2),
    (dict(level_shift=-2, narrow_filters=4, out_filters=6, norm_momentum=0.9), (2, 4, 4, 8), (2, 16, 16, 6),
     2 + 2 * 2, 2 * 2),
    (dict(level_shift=0, narrow_filters=4, out_filters=6, norm_epsilon=1e-4), (2, 4, 4, 8), (2, 4, 4, 6),
     2 + 2 * 2, 2 * 2),
])
def test_cross_scale_resample_harness(kwargs, in_shape, out_shape, trainable, non_trainable):
    testing.run_layer_test(CrossScaleResample, kwargs, in_shape, out_shape, expected_num_trainable_weights=trainable,
                           expected_num_non_trainable_weights=non_trainable)


@pytest.mark.parametrize("level_shift", [1, 2, 3, 5])
def test_cross_scale_down_has_one_strided_conv_then_max_pools(level_shift):
    layer = CrossScaleResample(level_shift, narrow_filters=4, out_filters=12)
    x = _random((1, 32, 64, 8))
    y = layer(x, training=False)
    factor = 2 ** level_shift
    assert tuple(y.shape) == (1, 32 // factor, 64 // factor, 12)
    convs = _layers_of(layer, keras.layers.Conv2D)
    strided = [c for c in convs if tuple(c.strides) == (2, 2)]
    assert len(strided) == 1, "exactly one stride-2 conv"
    assert tuple(strided[0].kernel.shape) == (3, 3, 4, 4)
    pools = _layers_of(layer, keras.layers.MaxPooling2D)
    assert len(pools) == level_shift - 1
    assert all(tuple(p.pool_size) == (3, 3) and tuple(p.strides) == (2, 2) for p in pools)
    # The narrowing 1x1 conv comes first, the 1x1 to the target width last.
    assert [tuple(c.kernel.shape) for c in convs] == [(1, 1, 8, 4), (3, 3, 4, 4), (1, 1, 4, 12)]
    assert not _layers_of(layer, NearestUpsampling)


@pytest.mark.parametrize("level_shift", [-1, -2, -3])
def test_cross_scale_up_is_nearest_after_narrowing(level_shift):
    layer = CrossScaleResample(level_shift, narrow_filters=4, out_filters=6)
    x = _random((2, 3, 2, 8))
    y = _np(layer(x, training=False))
    factor = 2 ** -level_shift
    assert y.shape == (2, 3 * factor, 2 * factor, 6)
    convs = _layers_of(layer, keras.layers.Conv2D)
    assert [tuple(c.kernel.shape) for c in convs] == [(1, 1, 8, 4), (1, 1, 4, 6)]
    assert all(tuple(c.strides) == (1, 1) for c in convs)
    assert not _layers_of(layer, keras.layers.MaxPooling2D)
    # Only 1x1 convs around a nearest up-sampling: each factor x factor patch repeats one source pixel.
    coarse = y[:, ::factor, ::factor]
    np.testing.assert_array_equal(y, np.repeat(np.repeat(coarse, factor, axis=1), factor, axis=2))


def test_cross_scale_resample_ends_with_bn_without_activation():
    # Model Garden's `_resample_with_alpha`: the last 1x1 conv has BN but no activation (the network activates the
    # sum of parents).
    for level_shift in (-1, 0, 1):
        layer = CrossScaleResample(level_shift, narrow_filters=8, out_filters=16)
        y = _np(layer(_random((2, 8, 8, 8)), training=False))
        assert y.min() < 0, f"level_shift={level_shift}: output looks activated"
        assert isinstance(list(testing.walk_layers(layer))[-1], keras.layers.BatchNormalization)


# --- MobileResample ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, in_shape, out_shape, trainable, non_trainable", [
    (dict(level_shift=2, out_filters=6), (2, 16, 16, 8), (2, 4, 4, 6), 3 + 3 * 2, 3 * 2),
    (dict(level_shift=-1, out_filters=6, activation="hard_swish"), (2, 4, 4, 8), (2, 8, 8, 6), 1 + 2, 2),
    (dict(level_shift=0, out_filters=6), (2, 4, 4, 8), (2, 4, 4, 6), 1 + 2, 2),
])
def test_mobile_resample_harness(kwargs, in_shape, out_shape, trainable, non_trainable):
    testing.run_layer_test(MobileResample, kwargs, in_shape, out_shape, expected_num_trainable_weights=trainable,
                           expected_num_non_trainable_weights=non_trainable)


@pytest.mark.parametrize("level_shift", [1, 2, 3])
def test_mobile_down_has_one_depthwise_conv_per_level(level_shift):
    layer = MobileResample(level_shift, out_filters=6)
    y = layer(_random((1, 32, 16, 8)), training=False)
    factor = 2 ** level_shift
    assert tuple(y.shape) == (1, 32 // factor, 16 // factor, 6)
    depthwise = _layers_of(layer, keras.layers.DepthwiseConv2D)
    assert len(depthwise) == level_shift
    assert all(tuple(d.strides) == (2, 2) and tuple(d.kernel_size) == (3, 3) for d in depthwise)
    # No narrowing conv (Model Garden's `_resample_with_sepconv`): the only regular conv is the final 1x1.
    assert [tuple(c.kernel.shape) for c in _layers_of(layer, keras.layers.Conv2D)] == [(1, 1, 8, 6)]
    assert not _layers_of(layer, keras.layers.MaxPooling2D)


def test_mobile_up_is_nearest_then_1x1():
    layer = MobileResample(-2, out_filters=6)
    y = _np(layer(_random((1, 2, 3, 8)), training=False))
    assert y.shape == (1, 8, 12, 6)
    assert not _layers_of(layer, keras.layers.DepthwiseConv2D)
    assert [u.scale for u in _layers_of(layer, NearestUpsampling)] == [4]
    np.testing.assert_array_equal(y, np.repeat(np.repeat(y[:, ::4, ::4], 4, axis=1), 4, axis=2))
    assert y.min() < 0  # BN, no activation at the end
