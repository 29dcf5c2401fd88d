"""Tests of spinenet_tf/layers/blocks.py: ResidualBlock, BottleneckBlock, MBConvBlock, SqueezeExcite.

Expected structures come from Model Garden's `official/vision/modeling/layers/nn_blocks.py` as SpineNet uses them
(`ResidualBlock` / `BottleneckBlock`: BN after every conv, act after all but the last, projection = 1x1 conv + BN, no
conv biases, stochastic depth on the residual branch before the add; `InvertedBottleneckBlock` as built by
`official/vision/modeling/backbones/spinenet_mobile.py` for MBConv: expand 1x1, depthwise 3x3, SE reducing to
max(1, int(in_filters * se_ratio)) on the expanded tensor with a hard_sigmoid gate, project 1x1 + BN with no
activation, residual only when in == out and stride 1).
"""

import keras
import numpy as np
import pytest

import testing
from spinenet_tf.layers import BottleneckBlock, MBConvBlock, ResidualBlock, SqueezeExcite

ACTS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "swish": lambda x: x / (1.0 + np.exp(-x)),
    "hard_swish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
}


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _bn_inference(y, bn):
    """A freshly built BatchNormalization in inference mode, from its own weights."""
    gamma, beta, mean, var = (_np(w) for w in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    return gamma * (y - mean) / np.sqrt(var + bn.epsilon) + beta


def _conv1x1(x, kernel, stride=1):
    return np.einsum("nhwc,cd->nhwd", x[:, ::stride, ::stride], _np(kernel)[0, 0])


# --- the harness: config, build, symbolic, eager, fit ------------------------------------------------------------

# Trainable weight counts: one kernel per conv (no biases), gamma + beta per BN; non-trainable: the BN statistics.
@pytest.mark.parametrize("cls, kwargs, in_shape, out_shape, trainable, non_trainable", [
    (ResidualBlock, dict(filters=8), (2, 8, 8, 8), (2, 8, 8, 8), 2 + 2 * 2, 2 * 2),
    (ResidualBlock, dict(filters=8, strides=2, use_projection=True, activation="swish"),
     (2, 8, 8, 4), (2, 4, 4, 8), 3 + 3 * 2, 3 * 2),
    (BottleneckBlock, dict(filters=4, use_projection=True, stochastic_depth_rate=0.2),
     (2, 8, 8, 8), (2, 8, 8, 16), 4 + 4 * 2, 4 * 2),
    (BottleneckBlock, dict(filters=4, strides=2, use_projection=True, norm_momentum=0.9, norm_epsilon=1e-4),
     (2, 7, 7, 8), (2, 4, 4, 16), 4 + 4 * 2, 4 * 2),
    (BottleneckBlock, dict(filters=4), (2, 8, 8, 16), (2, 8, 8, 16), 3 + 3 * 2, 3 * 2),
    # MBConv: expand, depthwise, project convs (no bias) + 3 BNs + SE reduce/expand (kernel + bias each).
    (MBConvBlock, dict(in_filters=8, out_filters=8, stochastic_depth_rate=0.1, activation="hard_swish"),
     (2, 8, 8, 8), (2, 8, 8, 8), 3 + 3 * 2 + 4, 3 * 2),
    (MBConvBlock, dict(in_filters=8, out_filters=16, strides=2, se_ratio=0.0),
     (2, 8, 8, 8), (2, 4, 4, 16), 3 + 3 * 2, 3 * 2),
    (MBConvBlock, dict(in_filters=8, out_filters=8, expand_ratio=1), (2, 8, 8, 8), (2, 8, 8, 8), 2 + 2 * 2 + 4, 2 * 2),
    (SqueezeExcite, dict(reduced_filters=2), (2, 4, 4, 12), (2, 4, 4, 12), 4, 0),
    (SqueezeExcite, dict(reduced_filters=3, gating_activation="sigmoid"), (2, 4, 4, 6), (2, 4, 4, 6), 4, 0),
])
def test_layer_harness(cls, kwargs, in_shape, out_shape, trainable, non_trainable):
    testing.run_layer_test(cls, kwargs, in_shape, out_shape, expected_num_trainable_weights=trainable,
                           expected_num_non_trainable_weights=non_trainable)


# --- residual and bottleneck blocks ------------------------------------------------------------------------------

@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("cls, filters, channels", [(BottleneckBlock, 4, 16), (ResidualBlock, 8, 8)])
def test_zeroed_last_bn_returns_act_of_identity_shortcut(cls, filters, channels, act):
    # With the last BN's gamma (and beta) at zero the residual branch is exactly 0, so the block is act(shortcut).
    block = cls(filters, activation=act)
    x = _random((2, 6, 6, channels))
    block.build(x.shape)
    last_bn = block.bn3 if cls is BottleneckBlock else block.bn2
    last_bn.gamma.assign(np.zeros(last_bn.gamma.shape, "float32"))
    np.testing.assert_allclose(_np(block(x, training=False)), ACTS[act](x), atol=1e-6)


@pytest.mark.parametrize("cls, filters, out_channels", [(BottleneckBlock, 4, 16), (ResidualBlock, 8, 8)])
def test_projection_shortcut_is_strided_1x1_conv_plus_bn(cls, filters, out_channels):
    block = cls(filters, strides=2, use_projection=True)
    x = _random((2, 8, 8, 6))
    block.build(x.shape)
    last_bn = block.bn3 if cls is BottleneckBlock else block.bn2
    last_bn.gamma.assign(np.zeros(last_bn.gamma.shape, "float32"))
    assert tuple(block.shortcut_conv.kernel.shape) == (1, 1, 6, out_channels)
    # 'same' padding with stride 2 and a 1x1 kernel samples pixels 0, 2, 4, ...
    expected = np.maximum(_bn_inference(_conv1x1(x, block.shortcut_conv.kernel, stride=2), block.shortcut_bn), 0)
    np.testing.assert_allclose(_np(block(x, training=False)), expected, rtol=1e-5, atol=1e-5)


def test_bottleneck_kernel_shapes_follow_model_garden():
    # 1x1 (f) -> 3x3 (f, strided) -> 1x1 (4f): Model Garden's nn_blocks.BottleneckBlock.
    block = BottleneckBlock(4, strides=2, use_projection=True)
    block.build((1, 8, 8, 6))
    assert [tuple(c.kernel.shape) for c in (block.conv1, block.conv2, block.conv3)] == [
        (1, 1, 6, 4), (3, 3, 4, 4), (1, 1, 4, 16)]
    assert tuple(block.conv2.strides) == (2, 2) and tuple(block.conv1.strides) == (1, 1)
    assert not any("bias" in w.path for w in block.weights)


@pytest.mark.parametrize("cls, filters, channels", [(BottleneckBlock, 4, 16), (ResidualBlock, 8, 8)])
def test_stochastic_depth_drops_the_residual_branch_before_the_add(cls, filters, channels):
    rate = 0.5
    keras.utils.set_random_seed(1)
    block = cls(filters, stochastic_depth_rate=rate)
    x = _random((64, 4, 4, channels), seed=1)
    block.build(x.shape)
    y = _np(block(x, training=True))
    # The branch as the block computes it in training mode (batch statistics), from its public sublayers.
    if cls is BottleneckBlock:
        h = block.act1(block.bn1(block.conv1(x), training=True))
        h = block.act2(block.bn2(block.conv2(h), training=True))
        branch = _np(block.bn3(block.conv3(h), training=True))
    else:
        h = block.act1(block.bn1(block.conv1(x), training=True))
        branch = _np(block.bn2(block.conv2(h), training=True))
    dropped = np.all(np.isclose(y, np.maximum(x, 0), atol=1e-6), axis=(1, 2, 3))
    assert 0 < dropped.sum() < len(x)  # P(fail) = 2 * 0.5**64
    np.testing.assert_allclose(y[~dropped], np.maximum(x + branch / (1 - rate), 0)[~dropped], rtol=1e-5, atol=1e-5)
    # Inference: the identity on the branch, i.e. the same as a block without stochastic depth.
    plain = cls(filters)
    plain.build(x.shape)
    plain.set_weights(block.get_weights())
    np.testing.assert_allclose(_np(block(x, training=False)), _np(plain(x, training=False)), atol=1e-6)


# --- MBConv ------------------------------------------------------------------------------------------------------

def test_mbconv_residual_only_when_shape_is_kept():
    x = _random((2, 8, 8, 8))
    for kwargs, expected in [
        (dict(in_filters=8, out_filters=8), x),                      # residual: zero branch + input, no final act
        (dict(in_filters=8, out_filters=16), np.zeros((2, 8, 8, 16))),  # width changes: no residual
        (dict(in_filters=8, out_filters=8, strides=2), np.zeros((2, 4, 4, 8))),  # stride 2: no residual
    ]:
        block = MBConvBlock(**kwargs)
        block.build(x.shape)
        block.project_bn.gamma.assign(np.zeros(block.project_bn.gamma.shape, "float32"))
        np.testing.assert_allclose(_np(block(x, training=False)), expected, atol=1e-6, err_msg=str(kwargs))


@pytest.mark.parametrize("in_filters, se_ratio, reduced", [(8, 0.2, 1), (16, 0.2, 3), (40, 0.25, 10), (4, 0.1, 1)])
def test_mbconv_squeeze_width_and_se_on_expanded_tensor(in_filters, se_ratio, reduced):
    # Model Garden's nn_blocks.InvertedBottleneckBlock: reduce to max(1, int(in_filters * se_ratio)); SE acts on
    # the expanded (x expand_ratio) tensor.
    block = MBConvBlock(in_filters, in_filters, expand_ratio=6, se_ratio=se_ratio)
    block.build((1, 4, 4, in_filters))
    expanded = 6 * in_filters
    assert tuple(block.expand_conv.kernel.shape) == (1, 1, in_filters, expanded)
    assert tuple(block.se.reduce.kernel.shape) == (1, 1, expanded, reduced)
    assert tuple(block.se.expand.kernel.shape) == (1, 1, reduced, expanded)
    assert block.se.gating_activation == "hard_sigmoid"
    assert tuple(block.project_conv.kernel.shape) == (1, 1, expanded, in_filters)


# --- squeeze-and-excitation --------------------------------------------------------------------------------------

def _set_se(se, reduce_kernel, reduce_bias, expand_kernel, expand_bias):
    se.reduce.kernel.assign(np.asarray(reduce_kernel, "float32").reshape(se.reduce.kernel.shape))
    se.reduce.bias.assign(np.asarray(reduce_bias, "float32"))
    se.expand.kernel.assign(np.asarray(expand_kernel, "float32").reshape(se.expand.kernel.shape))
    se.expand.bias.assign(np.asarray(expand_bias, "float32"))


def test_squeeze_excite_gate_is_hard_sigmoid():
    # Kernels at zero: the pre-gate logits are the expand biases z. hard_sigmoid(z) = relu6(z + 3) / 6
    # (Model Garden's activations.hard_sigmoid): 0 below -3, 1 above 3, linear between.
    z = np.array([-5.0, -3.0, -1.5, 0.0, 1.5, 3.0, 5.0], "float32")
    gate = np.array([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0], "float32")
    se = SqueezeExcite(2)
    x = _random((2, 3, 3, len(z)))
    se.build(x.shape)
    _set_se(se, np.zeros((len(z), 2)), [0.5, 0.5], np.zeros((2, len(z))), z)
    np.testing.assert_allclose(_np(se(x)), x * gate, rtol=1e-6, atol=1e-6)
    # The same logits through the "sigmoid" gate.
    se = SqueezeExcite(2, gating_activation="sigmoid")
    se.build(x.shape)
    _set_se(se, np.zeros((len(z), 2)), [0.5, 0.5], np.zeros((2, len(z))), z)
    np.testing.assert_allclose(_np(se(x)), x / (1 + np.exp(-z)), rtol=1e-6, atol=1e-6)


def test_squeeze_excite_squeezes_the_spatial_mean_through_relu():
    # Identity 1x1 kernels, zero biases: logit_c = relu(mean over H, W of channel c).
    means = np.array([-1.0, 0.0, 1.5, 5.0], "float32")
    x = _random((1, 4, 4, 4), seed=3)
    x = x - x.mean(axis=(1, 2), keepdims=True) + means  # each channel has exactly the chosen spatial mean
    se = SqueezeExcite(4)
    se.build(x.shape)
    _set_se(se, np.eye(4), np.zeros(4), np.eye(4), np.zeros(4))
    gate = np.clip(np.maximum(means, 0) + 3, 0, 6) / 6  # [0.5, 0.5, 0.75, 1.0]
    np.testing.assert_allclose(_np(se(x)), x * gate, rtol=1e-5, atol=1e-5)


def test_squeeze_excite_rejects_unknown_gate():
    with pytest.raises(ValueError, match="gating_activation 'relu'"):
        SqueezeExcite(2, gating_activation="relu")


def test_blocks_reject_unknown_activation():
    with pytest.raises(ValueError, match="activation 'gelu' is not one of relu, swish, hard_swish"):
        BottleneckBlock(4, activation="gelu")
