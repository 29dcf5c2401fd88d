"""Cross-scale resampling: how a SpineNet block reads a parent at another level (arXiv:1912.05027, §3.2, Fig. 3).

`CrossScaleResample` (SpineNet): 1x1 conv narrowing the parent to alpha * C (C = the parent's block width, i.e.
its output channels / 4 for a bottleneck), then either nearest up-sampling, or one stride-2 3x3 conv followed by
stride-2 3x3 max-pools until the level matches, then a 1x1 conv to the target block's input width. Every conv has
BN; the first two have an activation, the last does not (the sum of parents is activated by the network).
Mirrors Model Garden `spinenet.py::_resample_with_alpha`.

`MobileResample` (SpineNet-Mobile, arXiv:2010.11426 appendix A): no narrowing 1x1; a stride-2 depthwise 3x3 + BN +
act per level down, or nearest up-sampling; then a 1x1 conv + BN to the target width. Mirrors
`spinenet_mobile.py::_resample_with_sepconv`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from spinenet_tf.layers.normalization import NormActivationMixin, conv2d, depthwise_conv2d
from spinenet_tf.layers.tracking import CheckpointCollections, build_chain, chain_output_shape


@keras.saving.register_keras_serializable(package="spinenet_tf")
class NearestUpsampling(keras.layers.Layer):
    """Nearest-neighbour up-sampling by an integer factor.

    Equal to Model Garden's 6-D reshape + tile for integer factors, but lowers to one `ResizeNearestNeighbor`
    (TFLite `RESIZE_NEAREST_NEIGHBOR`, which the GPU delegate supports) and works with unknown spatial sizes.
    """

    def __init__(self, scale: int, **kwargs):
        super().__init__(**kwargs)
        if int(scale) != scale or scale < 1:
            raise ValueError(f"NearestUpsampling scale={scale}: must be a positive integer")
        self.scale = int(scale)

    def call(self, inputs):
        height, width = inputs.shape[1], inputs.shape[2]
        if height is None or width is None:
            size = tf.shape(inputs)[1:3] * self.scale
        else:
            size = (height * self.scale, width * self.scale)
        # With integer factors, half-pixel nearest picks source pixel floor(i / scale): the same as tiling.
        return tf.cast(tf.image.resize(inputs, size, method="nearest"), inputs.dtype)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, None if height is None else height * self.scale,
                None if width is None else width * self.scale, channels)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class _Resample(CheckpointCollections, NormActivationMixin, keras.layers.Layer):
    """Shared plumbing: level shift, batch-norm settings, activation, and a sequential call over `self.chain`."""

    def __init__(self, level_shift: int, out_filters: int, activation: str = "relu", norm_momentum: float = 0.99,
                 norm_epsilon: float = 1e-3, use_sync_bn: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.level_shift = level_shift  # target level - parent level: > 0 down-samples, < 0 up-samples
        self.out_filters = out_filters
        self._set_norm_activation(activation, norm_momentum, norm_epsilon, use_sync_bn)
        self.chain: list[keras.layers.Layer] = []

    def build(self, input_shape):
        build_chain(self.chain, input_shape)

    def call(self, inputs):
        x = inputs
        for layer in self.chain:
            x = layer(x)
        return x

    def compute_output_shape(self, input_shape):
        return chain_output_shape(self.chain, input_shape)

    def get_config(self):
        return {**super().get_config(), "level_shift": self.level_shift, "out_filters": self.out_filters,
                "activation": self.activation, "norm_momentum": self.norm_momentum,
                "norm_epsilon": self.norm_epsilon, "use_sync_bn": self.use_sync_bn}


@keras.saving.register_keras_serializable(package="spinenet_tf")
class CrossScaleResample(_Resample):
    """SpineNet's resampling connection from a parent block to a target block.

    Args:
        level_shift: Target level minus parent level (1 down-samples by 2, -2 up-samples by 4, 0 keeps the size).
        narrow_filters: Width after the first 1x1 conv: `int(alpha * parent block width)`.
        out_filters: Target block's input width (4 x block width for a bottleneck target).
        activation, norm_momentum, norm_epsilon, use_sync_bn: as the blocks.

    Example:
        >>> CrossScaleResample(1, 32, 256)(keras.ops.ones((1, 16, 16, 256))).shape
        (1, 8, 8, 256)
    """

    def __init__(self, level_shift: int, narrow_filters: int, out_filters: int, **kwargs):
        super().__init__(level_shift, out_filters, **kwargs)
        self.narrow_filters = narrow_filters
        self.chain = [conv2d(narrow_filters, 1, name="narrow_conv"), self._bn("narrow_bn"), self._act("narrow_act")]
        if level_shift > 0:
            self.chain += [conv2d(narrow_filters, 3, 2, name="down_conv"), self._bn("down_bn"), self._act("down_act")]
            self.chain += [keras.layers.MaxPooling2D(3, 2, padding="same", name=f"down_pool{i}")
                         for i in range(1, level_shift)]
        elif level_shift < 0:
            self.chain.append(NearestUpsampling(2 ** -level_shift, name="upsample"))
        self.chain += [conv2d(out_filters, 1, name="out_conv"), self._bn("out_bn")]

    def get_config(self):
        return {**super().get_config(), "narrow_filters": self.narrow_filters}


@keras.saving.register_keras_serializable(package="spinenet_tf")
class MobileResample(_Resample):
    """SpineNet-Mobile's resampling connection: depthwise stride-2 convs down, or nearest up; then 1x1 to width.

    Args:
        level_shift: Target level minus parent level.
        out_filters: Target block's width.
        activation, norm_momentum, norm_epsilon, use_sync_bn: as the blocks.

    Example:
        >>> MobileResample(-1, 40)(keras.ops.ones((1, 4, 4, 80))).shape
        (1, 8, 8, 40)
    """

    def __init__(self, level_shift: int, out_filters: int, **kwargs):
        super().__init__(level_shift, out_filters, **kwargs)
        for i in range(level_shift):
            self.chain += [depthwise_conv2d(3, 2, name=f"down{i}_conv"), self._bn(f"down{i}_bn"),
                         self._act(f"down{i}_act")]
        if level_shift < 0:
            self.chain.append(NearestUpsampling(2 ** -level_shift, name="upsample"))
        self.chain += [conv2d(out_filters, 1, name="out_conv"), self._bn("out_bn")]
