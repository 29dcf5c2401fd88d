"""The second-stage heads of Mask R-CNN (He et al., arXiv:1703.06870) on RoI features: `DetectionHead` (Fast R-CNN
box head) and `MaskHead`, as configured for SpineNet (arXiv:1912.05027 §5.1, the authors' `spinenet*_mrcnn.yaml`).

Mirror Model Garden's `official/vision/modeling/heads/instance_heads.py` weight for weight:
- `DetectionHead`: num_convs x (3x3 conv + BN + act), flatten, num_fcs x (dense + BN + act), then a class dense
  (softmax logits, N(0, 0.01)) and a class-specific box dense (num_classes * 4 codes, N(0, 0.001)); convs use
  VarianceScaling(2, fan_out, normal) with bias, dense layers VarianceScaling(1/3, fan_out, uniform).
- `MaskHead`: num_convs x (3x3 conv + BN + act), a stride-2 2x2 transposed conv + BN + act, a 1x1 conv to one mask
  logit map per class, and the map of each RoI's class picked out.
Batch norms follow every conv and dense (the authors' `use_batch_norm: true`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from spinenet_tf.layers.normalization import NormActivationMixin
from spinenet_tf.layers.tracking import CheckpointCollections


def _he_fan_out() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def _conv(filters: int, kernel_size: int, separable: bool, name: str) -> keras.layers.Layer:
    if separable:
        return keras.layers.SeparableConv2D(filters, kernel_size, padding="same", depthwise_initializer=_he_fan_out(),
                                            pointwise_initializer=_he_fan_out(), name=name)
    return keras.layers.Conv2D(filters, kernel_size, padding="same", kernel_initializer=_he_fan_out(), name=name)


class _RoIHead(CheckpointCollections, NormActivationMixin, keras.layers.Layer):
    """The conv tower both heads share: `[B, K, S, S, C]` RoI features -> `[B * K, S, S, num_filters]`."""

    def __init__(self, num_classes: int, num_convs: int, num_filters: int, use_separable_conv: bool, activation: str,
                 norm_momentum: float, norm_epsilon: float, use_sync_bn: bool, prefix: str, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: must be >= 1")
        self.num_classes = num_classes
        self.num_convs = num_convs
        self.num_filters = num_filters
        self.use_separable_conv = use_separable_conv
        self._set_norm_activation(activation, norm_momentum, norm_epsilon, use_sync_bn)
        self.convs = [_conv(num_filters, 3, use_separable_conv, f"{prefix}_conv{i}") for i in range(num_convs)]
        self.conv_norms = [self._bn(f"{prefix}_conv_bn{i}") for i in range(num_convs)]
        self.act = self._act("act")

    def _build_tower(self, roi_shape) -> int:
        width = roi_shape[-1]
        for conv, norm in zip(self.convs, self.conv_norms):
            conv.build((None, None, None, width))
            width = self.num_filters
            norm.build((None, None, None, width))
        return width

    def _tower(self, roi_features):
        height, width, channels = roi_features.shape[2:]
        x = tf.reshape(roi_features, [-1, height, width, channels])
        for conv, norm in zip(self.convs, self.conv_norms):
            x = self.act(norm(conv(x)))
        return x

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "num_convs": self.num_convs,
                "num_filters": self.num_filters, "use_separable_conv": self.use_separable_conv,
                "activation": self.activation, "norm_momentum": self.norm_momentum,
                "norm_epsilon": self.norm_epsilon, "use_sync_bn": self.use_sync_bn}


@keras.saving.register_keras_serializable(package="spinenet_tf")
class DetectionHead(_RoIHead):
    """Fast R-CNN box head: class logits and class-specific box codes per RoI.

    Args:
        num_classes: Classes including the background class 0 (91 for COCO in Model Garden's layout).
        num_convs, num_filters: Conv tower (4 x 256; 4 x 128 for SpineNet-49S, 7 x 384 for SpineNet-190).
        num_fcs, fc_dims: Dense layers after the tower (1 x 1024; 1 x 512 for SpineNet-49S).
        use_separable_conv: Separable tower convs.
        activation, norm_momentum, norm_epsilon, use_sync_bn: Activation and batch-norm settings.

    Call:
        roi_features: `[B, K, S, S, C]` (S = 7). Returns (class_outputs `[B, K, num_classes]` logits,
        box_outputs `[B, K, num_classes * 4]` codes relative to the RoI, encoded with weights (10, 10, 5, 5)).
    """

    def __init__(self, num_classes: int, num_convs: int = 4, num_filters: int = 256, num_fcs: int = 1,
                 fc_dims: int = 1024, use_separable_conv: bool = False, activation: str = "relu",
                 norm_momentum: float = 0.99, norm_epsilon: float = 1e-3, use_sync_bn: bool = False, **kwargs):
        super().__init__(num_classes, num_convs, num_filters, use_separable_conv, activation, norm_momentum,
                         norm_epsilon, use_sync_bn, "detection", **kwargs)
        self.num_fcs = num_fcs
        self.fc_dims = fc_dims
        fc_init = keras.initializers.VarianceScaling(scale=1 / 3.0, mode="fan_out", distribution="uniform")
        self.fcs = [keras.layers.Dense(fc_dims, kernel_initializer=fc_init, name=f"detection_fc{i}")
                    for i in range(num_fcs)]
        self.fc_norms = [self._bn(f"detection_fc_bn{i}") for i in range(num_fcs)]
        self.class_predictor = keras.layers.Dense(num_classes, name="detection_scores",
                                                  kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))
        self.box_predictor = keras.layers.Dense(num_classes * 4, name="detection_boxes",
                                                kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))

    def build(self, input_shape):
        _, _, height, width, _ = input_shape
        units = height * width * self._build_tower(input_shape)
        for fc, norm in zip(self.fcs, self.fc_norms):
            fc.build((None, None, units))
            units = self.fc_dims
            norm.build((None, None, units))
        self.class_predictor.build((None, None, units))
        self.box_predictor.build((None, None, units))

    def call(self, roi_features):
        num_rois, height, width = roi_features.shape[1:4]
        x = self._tower(roi_features)
        x = tf.reshape(x, [-1, num_rois, height * width * x.shape[-1]])
        for fc, norm in zip(self.fcs, self.fc_norms):
            x = self.act(norm(fc(x)))
        return self.class_predictor(x), self.box_predictor(x)

    def compute_output_shape(self, input_shape):
        batch, num_rois = input_shape[:2]
        return (batch, num_rois, self.num_classes), (batch, num_rois, self.num_classes * 4)

    def get_config(self):
        return {**super().get_config(), "num_fcs": self.num_fcs, "fc_dims": self.fc_dims}


@keras.saving.register_keras_serializable(package="spinenet_tf")
class MaskHead(_RoIHead):
    """Mask head: a `2S x 2S` mask logit map per RoI, for the RoI's class.

    Args:
        num_classes: Classes including the background class 0 (one map each).
        upsample_factor: Stride and size of the transposed conv (2: 14x14 RoI features -> 28x28 masks).
        num_convs, num_filters: Conv tower (4 x 256; 4 x 128 for SpineNet-49S, 7 x 384 for SpineNet-190).
        use_separable_conv: Separable tower convs and predictor.
        activation, norm_momentum, norm_epsilon, use_sync_bn: Activation and batch-norm settings.

    Call:
        inputs: (roi_features `[B, K, S, S, C]`, roi_classes `[B, K]` int). Returns mask logits
        `[B, K, S * upsample_factor, S * upsample_factor]` of each RoI's class.
    """

    def __init__(self, num_classes: int, upsample_factor: int = 2, num_convs: int = 4, num_filters: int = 256,
                 use_separable_conv: bool = False, activation: str = "relu", norm_momentum: float = 0.99,
                 norm_epsilon: float = 1e-3, use_sync_bn: bool = False, **kwargs):
        super().__init__(num_classes, num_convs, num_filters, use_separable_conv, activation, norm_momentum,
                         norm_epsilon, use_sync_bn, "mask", **kwargs)
        self.upsample_factor = upsample_factor
        self.deconv = keras.layers.Conv2DTranspose(num_filters, upsample_factor, strides=upsample_factor,
                                                   padding="valid", kernel_initializer=_he_fan_out(),
                                                   name="mask_upsampling")
        self.deconv_norm = self._bn("mask_deconv_bn")
        self.mask_predictor = _conv(num_classes, 1, use_separable_conv, "mask_logits")

    def build(self, input_shape):
        roi_shape = input_shape[0]
        width = self._build_tower(roi_shape)
        self.deconv.build((None, None, None, width))
        self.deconv_norm.build((None, None, None, self.num_filters))
        self.mask_predictor.build((None, None, None, self.num_filters))

    def call(self, inputs):
        roi_features, roi_classes = inputs
        num_rois, height, width = roi_features.shape[1:4]
        x = self.act(self.deconv_norm(self.deconv(self._tower(roi_features))))
        logits = self.mask_predictor(x)
        size = (height * self.upsample_factor, width * self.upsample_factor)
        logits = tf.reshape(logits, [-1, num_rois, size[0], size[1], self.num_classes])
        return tf.gather(logits, tf.cast(roi_classes, tf.int32), axis=-1, batch_dims=2)

    def compute_output_shape(self, input_shape):
        batch, num_rois, height, width, _ = input_shape[0]
        return (batch, num_rois, height * self.upsample_factor, width * self.upsample_factor)

    def get_config(self):
        return {**super().get_config(), "upsample_factor": self.upsample_factor}
