"""Keras 3 layers of the SpineNet family: blocks, cross-scale resampling, stochastic depth; and what the models
share for training (`keras_fit`: L2 term, optimizer slots; `precise_bn`: batch-norm re-estimation)."""

from spinenet_tf.layers.blocks import BottleneckBlock, MBConvBlock, ResidualBlock, SqueezeExcite
from spinenet_tf.layers.resample import CrossScaleResample, MobileResample, NearestUpsampling
from spinenet_tf.layers.stochastic_depth import StochasticDepth, stochastic_depth_rate_for_block

__all__ = [
    "BottleneckBlock", "CrossScaleResample", "MBConvBlock", "MobileResample", "NearestUpsampling",
    "ResidualBlock", "SqueezeExcite", "StochasticDepth", "stochastic_depth_rate_for_block",
]
