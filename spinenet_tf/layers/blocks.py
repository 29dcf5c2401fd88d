"""The building blocks of SpineNet and SpineNet-Mobile.

ResidualBlock and BottleneckBlock: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
MBConvBlock (inverted bottleneck + squeeze-and-excitation): Sandler et al., MobileNetV2 (arXiv:1801.04381),
Hu et al., SENet (arXiv:1709.01507), as used by SpineNet-Mobile (arXiv:2010.11426, appendix A).

Each mirrors the Model Garden layer (`official/vision/modeling/layers/nn_blocks.py`: `ResidualBlock`,
`BottleneckBlock`, `InvertedBottleneckBlock`; `nn_layers.SqueezeExcitation`) weight for weight, with the defaults
SpineNet uses (no SE in residual/bottleneck blocks, no explicit padding, no ResNet-D shortcut).
"""

from __future__ import annotations

import keras
from keras import ops

from spinenet_tf.layers.normalization import NormActivationMixin, conv2d, depthwise_conv2d
from spinenet_tf.layers.stochastic_depth import StochasticDepth
from spinenet_tf.layers.tracking import CheckpointCollections, build_chain


class _Block(CheckpointCollections, NormActivationMixin, keras.layers.Layer):
    """Shared arguments and plumbing: batch-norm settings, activation, stochastic depth."""

    def __init__(self, *, stochastic_depth_rate: float = 0.0, activation: str = "relu", norm_momentum: float = 0.99,
                 norm_epsilon: float = 1e-3, use_sync_bn: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.stochastic_depth_rate = float(stochastic_depth_rate)
        self._set_norm_activation(activation, norm_momentum, norm_epsilon, use_sync_bn)
        self.drop_path = StochasticDepth(stochastic_depth_rate, name="drop_path") if stochastic_depth_rate else None

    def _drop(self, x, training):
        return self.drop_path(x, training=training) if self.drop_path is not None else x

    def get_config(self):
        return {**super().get_config(), "stochastic_depth_rate": self.stochastic_depth_rate,
                "activation": self.activation, "norm_momentum": self.norm_momentum,
                "norm_epsilon": self.norm_epsilon, "use_sync_bn": self.use_sync_bn}


class _ResNetBlock(_Block):
    """Residual branch (`_branch`, built by subclasses) plus an identity or projected shortcut, then activation."""

    expansion = 1  # output channels = expansion * filters

    def __init__(self, filters: int, strides: int = 1, use_projection: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.use_projection = use_projection
        if use_projection:
            self.shortcut_conv = conv2d(self.expansion * filters, 1, strides, name="shortcut_conv")
            self.shortcut_bn = self._bn("shortcut_bn")
        self.branch: list[keras.layers.Layer] = []
        self.act_out = self._act("act_out")

    def build(self, input_shape):
        if self.use_projection:
            build_chain([self.shortcut_conv, self.shortcut_bn], input_shape)
        build_chain(self.branch, input_shape)

    def call(self, inputs, training=None):
        shortcut = inputs
        if self.use_projection:
            shortcut = self.shortcut_bn(self.shortcut_conv(inputs))
        x = inputs
        for layer in self.branch:  # Keras passes `training` on to the batch norms through the call context
            x = layer(x)
        return self.act_out(self._drop(x, training) + shortcut)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        def out(size):
            return None if size is None else -(-size // self.strides)  # 'same' padding: ceil(size / stride)
        return (batch, out(height), out(width), self.expansion * self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides,
                "use_projection": self.use_projection}


@keras.saving.register_keras_serializable(package="spinenet_tf")
class ResidualBlock(_ResNetBlock):
    """Basic residual block: 3x3 (strided) -> BN -> act -> 3x3 -> BN, plus shortcut, then act.

    Args:
        filters: Output width.
        strides: Stride of the first 3x3 convolution.
        use_projection: Put a 1x1 conv + BN on the shortcut (needed when width or stride changes).
        stochastic_depth_rate: Drop-path rate of the residual branch; 0 disables it.
        activation: "relu", "swish" or "hard_swish".
        norm_momentum, norm_epsilon, use_sync_bn: Batch-norm settings.

    Example:
        >>> ResidualBlock(64)(keras.ops.ones((1, 8, 8, 64))).shape
        (1, 8, 8, 64)
    """

    def __init__(self, filters: int, strides: int = 1, use_projection: bool = False, **kwargs):
        super().__init__(filters, strides, use_projection, **kwargs)
        self.conv1 = conv2d(filters, 3, strides, name="conv1")
        self.bn1 = self._bn("bn1")
        self.act1 = self._act("act1")
        self.conv2 = conv2d(filters, 3, name="conv2")
        self.bn2 = self._bn("bn2")
        self.branch = [self.conv1, self.bn1, self.act1, self.conv2, self.bn2]


@keras.saving.register_keras_serializable(package="spinenet_tf")
class BottleneckBlock(_ResNetBlock):
    """ResNet bottleneck: 1x1 -> 3x3 (strided) -> 1x1 (4x wider), BN after each, plus shortcut, then act.

    Args:
        filters: Width of the two inner convolutions; the block outputs `4 * filters` channels.
        strides: Stride of the 3x3 convolution.
        use_projection: Put a 1x1 conv + BN on the shortcut (needed when width or stride changes).
        Other arguments: as `ResidualBlock`.

    Example:
        >>> BottleneckBlock(16, use_projection=True)(keras.ops.ones((1, 8, 8, 32))).shape
        (1, 8, 8, 64)
    """

    expansion = 4

    def __init__(self, filters: int, strides: int = 1, use_projection: bool = False, **kwargs):
        super().__init__(filters, strides, use_projection, **kwargs)
        self.conv1 = conv2d(filters, 1, name="conv1")
        self.bn1 = self._bn("bn1")
        self.act1 = self._act("act1")
        self.conv2 = conv2d(filters, 3, strides, name="conv2")
        self.bn2 = self._bn("bn2")
        self.act2 = self._act("act2")
        self.conv3 = conv2d(4 * filters, 1, name="conv3")
        self.bn3 = self._bn("bn3")
        self.branch = [self.conv1, self.bn1, self.act1, self.conv2, self.bn2, self.act2, self.conv3, self.bn3]


@keras.saving.register_keras_serializable(package="spinenet_tf")
class SqueezeExcite(CheckpointCollections, keras.layers.Layer):
    """Squeeze-and-excitation: global mean -> 1x1 (reduce, bias) -> act -> 1x1 (expand, bias) -> gate, times input.

    Args:
        reduced_filters: Width of the squeeze; Model Garden uses `max(1, int(in_filters * se_ratio))`.
        gating_activation: "hard_sigmoid" (SpineNet-Mobile) or "sigmoid".
    """

    def __init__(self, reduced_filters: int, gating_activation: str = "hard_sigmoid", **kwargs):
        super().__init__(**kwargs)
        if gating_activation not in ("hard_sigmoid", "sigmoid"):
            raise ValueError(f"gating_activation {gating_activation!r} is not 'hard_sigmoid' or 'sigmoid'")
        self.reduced_filters = reduced_filters
        self.gating_activation = gating_activation
        self.reduce = conv2d(reduced_filters, 1, name="reduce", use_bias=True)
        self.expand = None  # width known in build()

    def build(self, input_shape):
        channels = input_shape[-1]
        self.expand = conv2d(channels, 1, name="expand", use_bias=True)
        self.reduce.build((None, 1, 1, channels))
        self.expand.build((None, 1, 1, self.reduced_filters))

    def call(self, inputs):
        x = ops.mean(inputs, axis=(1, 2), keepdims=True)
        x = self.expand(ops.relu(self.reduce(x)))
        # hard_sigmoid = relu6(x + 3) / 6, as Model Garden's `activations.hard_sigmoid` (which uses 0.16667).
        gate = ops.relu6(x + 3.0) / 6.0 if self.gating_activation == "hard_sigmoid" else ops.sigmoid(x)
        return inputs * gate

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduced_filters": self.reduced_filters,
                "gating_activation": self.gating_activation}


@keras.saving.register_keras_serializable(package="spinenet_tf")
class MBConvBlock(_Block):
    """Inverted bottleneck with squeeze-and-excitation (MBConv).

    1x1 expand (x `expand_ratio`) -> BN -> act -> depthwise kxk (strided) -> BN -> act -> SE -> 1x1 project -> BN,
    plus the input when the shape is unchanged (stride 1, in == out). The SE squeeze width is
    `max(1, int(in_filters * se_ratio))` and it gates the expanded tensor, as in Model Garden.

    Args:
        in_filters: Input width.
        out_filters: Output width.
        strides: Stride of the depthwise convolution.
        expand_ratio: Width multiplier of the expansion.
        se_ratio: Squeeze ratio; 0 disables SE.
        kernel_size: Depthwise kernel size.
        Other arguments: as `ResidualBlock`.

    Example:
        >>> MBConvBlock(16, 16)(keras.ops.ones((1, 8, 8, 16))).shape
        (1, 8, 8, 16)
    """

    def __init__(self, in_filters: int, out_filters: int, strides: int = 1, expand_ratio: int = 6,
                 se_ratio: float = 0.2, kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.in_filters = in_filters
        self.out_filters = out_filters
        self.strides = strides
        self.expand_ratio = expand_ratio
        self.se_ratio = se_ratio
        self.kernel_size = kernel_size
        expanded = in_filters * expand_ratio
        if expand_ratio > 1:
            self.expand_conv = conv2d(expanded, 1, name="expand_conv")
            self.expand_bn = self._bn("expand_bn")
            self.expand_act = self._act("expand_act")
        self.depthwise_conv = depthwise_conv2d(kernel_size, strides, name="depthwise_conv")
        self.depthwise_bn = self._bn("depthwise_bn")
        self.depthwise_act = self._act("depthwise_act")
        self.se = (SqueezeExcite(max(1, int(in_filters * se_ratio)), name="se")
                   if 0 < se_ratio <= 1 else None)
        self.project_conv = conv2d(out_filters, 1, name="project_conv")
        self.project_bn = self._bn("project_bn")
        self.use_residual = in_filters == out_filters and strides == 1

    def _sequence(self):
        expand = [self.expand_conv, self.expand_bn, self.expand_act] if self.expand_ratio > 1 else []
        se = [self.se] if self.se is not None else []
        return expand + [self.depthwise_conv, self.depthwise_bn, self.depthwise_act, *se, self.project_conv,
                         self.project_bn]

    def build(self, input_shape):
        build_chain(self._sequence(), input_shape)

    def call(self, inputs, training=None):
        x = inputs
        for layer in self._sequence():  # Keras passes `training` on to the batch norms through the call context
            x = layer(x)
        if self.use_residual:
            x = self._drop(x, training) + inputs
        return x

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = self.depthwise_conv.compute_output_shape(input_shape)
        return (batch, height, width, self.out_filters)

    def get_config(self):
        return {**super().get_config(), "in_filters": self.in_filters, "out_filters": self.out_filters,
                "strides": self.strides, "expand_ratio": self.expand_ratio, "se_ratio": self.se_ratio,
                "kernel_size": self.kernel_size}
