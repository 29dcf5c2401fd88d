"""The Region Proposal Network head of Faster / Mask R-CNN (Ren et al., arXiv:1506.01497; He et al., arXiv:1703.06870),
as configured for SpineNet (arXiv:1912.05027 §5.1: P3-P7 straight from the backbone, no FPN).

Mirrors Model Garden's `official/vision/modeling/heads/dense_prediction_heads.py::RPNHead` weight for weight: the
3x3 convolutions and the two 1x1 predictors are shared by every level, the batch norms are per level; the convs have
bias and N(0, 0.01) kernels, the objectness and box predictors zero bias and N(0, 1e-5) kernels (separable: Keras
defaults). Outputs per level: objectness logits `[B, H_l, W_l, A]` and box codes `[B, H_l, W_l, A * 4]`, anchor-major
within a location (the anchor layout of `anchors.generate_anchors`).
"""

from __future__ import annotations

import keras

from spinenet_tf.layers.normalization import NormActivationMixin
from spinenet_tf.layers.tracking import CheckpointCollections


def _conv(filters: int, kernel_size: int, separable: bool, kernel_std: float, name: str) -> keras.layers.Layer:
    if separable:  # MG gives separable convs no initializer: Keras defaults
        return keras.layers.SeparableConv2D(filters, kernel_size, padding="same", name=name)
    return keras.layers.Conv2D(filters, kernel_size, padding="same",
                               kernel_initializer=keras.initializers.RandomNormal(stddev=kernel_std), name=name)


@keras.saving.register_keras_serializable(package="spinenet_tf")
class RPNHead(CheckpointCollections, NormActivationMixin, keras.layers.Layer):
    """Objectness and box deltas for every anchor of every level.

    Args:
        num_anchors_per_location: Anchors per location (num_scales * len(aspect_ratios)).
        min_level, max_level: Levels of the input features.
        num_convs: Shared 3x3 convs before the predictors (1, as in Model Garden and the authors' TPU code).
        num_filters: Their width (256; 128 for SpineNet-49S, 384 for SpineNet-190).
        use_separable_conv: Separable convs and predictors.
        activation: Activation after each conv's batch norm.
        norm_momentum, norm_epsilon, use_sync_bn: Batch-norm settings.

    Call:
        features: {level: [B, H_l, W_l, C]}. Returns (scores, boxes), each {level: tensor}.
    """

    def __init__(self, num_anchors_per_location: int = 3, min_level: int = 3, max_level: int = 7, num_convs: int = 1,
                 num_filters: int = 256, use_separable_conv: bool = False, activation: str = "relu",
                 norm_momentum: float = 0.99, norm_epsilon: float = 1e-3, use_sync_bn: bool = False, **kwargs):
        super().__init__(**kwargs)
        if num_anchors_per_location < 1:
            raise ValueError(f"num_anchors_per_location={num_anchors_per_location}: must be >= 1")
        self.num_anchors_per_location = num_anchors_per_location
        self.min_level = min_level
        self.max_level = max_level
        self.num_convs = num_convs
        self.num_filters = num_filters
        self.use_separable_conv = use_separable_conv
        self._set_norm_activation(activation, norm_momentum, norm_epsilon, use_sync_bn)
        self.convs = [_conv(num_filters, 3, use_separable_conv, 0.01, f"rpn_conv{i}") for i in range(num_convs)]
        # norms[level - min_level][i]: one batch norm per level and conv (the convs are shared).
        self.norms = [[self._bn(f"rpn_bn_l{level}_{i}") for i in range(num_convs)]
                      for level in range(min_level, max_level + 1)]
        self.act = self._act("act")
        self.score_predictor = _conv(num_anchors_per_location, 1, use_separable_conv, 1e-5, "rpn_scores")
        self.box_predictor = _conv(4 * num_anchors_per_location, 1, use_separable_conv, 1e-5, "rpn_boxes")

    def build(self, input_shape):
        level_shape = input_shape[self.min_level] if isinstance(input_shape, dict) else input_shape
        width = level_shape[-1]
        for i, conv in enumerate(self.convs):
            conv.build((None, None, None, width))
            width = self.num_filters
            for level_norms in self.norms:
                level_norms[i].build((None, None, None, width))
        self.score_predictor.build((None, None, None, width))
        self.box_predictor.build((None, None, None, width))

    def call(self, features):
        scores, boxes = {}, {}
        for level in range(self.min_level, self.max_level + 1):
            x = features[level]
            for conv, norm in zip(self.convs, self.norms[level - self.min_level]):
                x = self.act(norm(conv(x)))
            scores[level] = self.score_predictor(x)
            boxes[level] = self.box_predictor(x)
        return scores, boxes

    def compute_output_shape(self, input_shape):
        shapes = ({}, {})
        for level in range(self.min_level, self.max_level + 1):
            batch, height, width, _ = input_shape[level]
            shapes[0][level] = (batch, height, width, self.num_anchors_per_location)
            shapes[1][level] = (batch, height, width, 4 * self.num_anchors_per_location)
        return shapes

    def get_config(self):
        return {**super().get_config(), "num_anchors_per_location": self.num_anchors_per_location,
                "min_level": self.min_level, "max_level": self.max_level, "num_convs": self.num_convs,
                "num_filters": self.num_filters, "use_separable_conv": self.use_separable_conv,
                "activation": self.activation, "norm_momentum": self.norm_momentum,
                "norm_epsilon": self.norm_epsilon, "use_sync_bn": self.use_sync_bn}
