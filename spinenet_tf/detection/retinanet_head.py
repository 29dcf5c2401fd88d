"""The RetinaNet head: class and box subnets shared across levels (Lin et al., "Focal Loss for Dense Object
Detection", ICCV 2017, arXiv:1708.02002), as configured for SpineNet (arXiv:1912.05027 §5.1).

Mirrors Model Garden's `official/vision/modeling/heads/dense_prediction_heads.py::RetinaNetHead` weight for
weight: the tower convolutions and the two predictors are shared by every level, the batch norms are per level;
tower convs are 3x3 with bias and N(0, 0.01) kernels (separable: Keras defaults), the class predictor has the
focal-loss prior bias -log((1 - 0.01) / 0.01) and N(0, 1e-5) kernels (separable: N(0, 0.03)), the box predictor a
zero bias. Outputs keep Model Garden's layout: per level `[B, H_l, W_l, A * num_classes]` and `[B, H_l, W_l, A * 4]`,
anchor-major within a location.
"""

from __future__ import annotations

import math

import keras

from spinenet_tf.layers.normalization import NormActivationMixin
from spinenet_tf.layers.tracking import CheckpointCollections


def _conv(filters: int, separable: bool, name: str, kernel_std: float | None, separable_std: float | None,
          bias_initializer="zeros") -> keras.layers.Layer:
    if separable:
        init = {} if separable_std is None else {
            "depthwise_initializer": keras.initializers.RandomNormal(stddev=separable_std),
            "pointwise_initializer": keras.initializers.RandomNormal(stddev=separable_std)}
        return keras.layers.SeparableConv2D(filters, 3, padding="same", bias_initializer=bias_initializer,
                                            name=name, **init)
    return keras.layers.Conv2D(filters, 3, padding="same", bias_initializer=bias_initializer,
                               kernel_initializer=keras.initializers.RandomNormal(stddev=kernel_std), name=name)


@keras.saving.register_keras_serializable(package="spinenet_tf")
class RetinaNetHead(CheckpointCollections, NormActivationMixin, keras.layers.Layer):
    """Class and box subnets applied to every pyramid level.

    Args:
        num_classes: Number of classes scored per anchor (sigmoid, no background column).
        num_anchors_per_location: Anchors per location (num_scales * len(aspect_ratios); 9 by default).
        min_level, max_level: Levels of the input features.
        num_convs: Tower depth (4; 7 for SpineNet-190).
        num_filters: Tower width (256; 128 for 49S; 512 for 190; 24/40/48 for the mobile models).
        use_separable_conv: Separable tower and predictors (the mobile models).
        activation: Tower activation ("swish" in Google's SpineNet configs).
        norm_momentum, norm_epsilon, use_sync_bn: Batch-norm settings.
        prior_probability: Initial foreground probability of the class predictor (focal-loss prior).

    Call:
        features: {level: [B, H_l, W_l, C]}. Returns (class_outputs, box_outputs), each {level: tensor}.
    """

    def __init__(self, num_classes: int, num_anchors_per_location: int = 9, min_level: int = 3, max_level: int = 7,
                 num_convs: int = 4, num_filters: int = 256, use_separable_conv: bool = False,
                 activation: str = "swish", norm_momentum: float = 0.99, norm_epsilon: float = 1e-3,
                 use_sync_bn: bool = False, prior_probability: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: must be >= 1")
        self.num_classes = num_classes
        self.num_anchors_per_location = num_anchors_per_location
        self.min_level = min_level
        self.max_level = max_level
        self.num_convs = num_convs
        self.num_filters = num_filters
        self.use_separable_conv = use_separable_conv
        self._set_norm_activation(activation, norm_momentum, norm_epsilon, use_sync_bn)
        self.prior_probability = prior_probability
        # Tower convs are shared by the levels; batch norms are per level: {net}_norms[level - min_level][i].
        for net in ("class", "box"):
            setattr(self, f"{net}_convs",
                    [_conv(num_filters, use_separable_conv, f"{net}_conv{i}", 0.01, None) for i in range(num_convs)])
            setattr(self, f"{net}_norms",
                    [[self._bn(f"{net}_bn_l{level}_{i}") for i in range(num_convs)]
                     for level in range(min_level, max_level + 1)])
        self.act = self._act("act")
        prior_bias = -math.log((1 - prior_probability) / prior_probability)
        self.class_predictor = _conv(num_classes * num_anchors_per_location, use_separable_conv, "class_predictor",
                                     1e-5, 0.03, keras.initializers.Constant(prior_bias))
        self.box_predictor = _conv(4 * num_anchors_per_location, use_separable_conv, "box_predictor", 1e-5, 0.03)

    def build(self, input_shape):
        level_shape = input_shape[self.min_level] if isinstance(input_shape, dict) else input_shape
        channels = level_shape[-1]
        for net, predictor in (("class", self.class_predictor), ("box", self.box_predictor)):
            width = channels
            for i, conv in enumerate(getattr(self, f"{net}_convs")):
                conv.build((None, None, None, width))
                width = self.num_filters
                for level_norms in getattr(self, f"{net}_norms"):
                    level_norms[i].build((None, None, None, width))
            predictor.build((None, None, None, width))

    def _tower(self, net: str, x, level: int):
        norms = getattr(self, f"{net}_norms")[level - self.min_level]
        for conv, norm in zip(getattr(self, f"{net}_convs"), norms):
            x = self.act(norm(conv(x)))
        return x

    def call(self, features):
        class_outputs, box_outputs = {}, {}
        for level in range(self.min_level, self.max_level + 1):
            class_outputs[level] = self.class_predictor(self._tower("class", features[level], level))
            box_outputs[level] = self.box_predictor(self._tower("box", features[level], level))
        return class_outputs, box_outputs

    def compute_output_shape(self, input_shape):
        shapes = ({}, {})
        for level in range(self.min_level, self.max_level + 1):
            batch, height, width, _ = input_shape[level]
            shapes[0][level] = (batch, height, width, self.num_classes * self.num_anchors_per_location)
            shapes[1][level] = (batch, height, width, 4 * self.num_anchors_per_location)
        return shapes

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "num_anchors_per_location": self.num_anchors_per_location, "min_level": self.min_level,
                "max_level": self.max_level, "num_convs": self.num_convs, "num_filters": self.num_filters,
                "use_separable_conv": self.use_separable_conv, "activation": self.activation,
                "norm_momentum": self.norm_momentum, "norm_epsilon": self.norm_epsilon,
                "use_sync_bn": self.use_sync_bn, "prior_probability": self.prior_probability}
