"""The feature pyramid network (Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017,
arXiv:1612.03144) of RetinaNet (arXiv:1708.02002 §4): the decoder of the SpineNet paper's R50-FPN baseline
(arXiv:1912.05027, Table 3 / §5), which SpineNet's scale-permuted backbone replaces.

Mirrors Model Garden's `official/vision/modeling/decoders/fpn.py::FPN` weight for weight with its defaults (sum
fusion, plain convolutions, batch norm 0.99 / 1e-3), in MG's order:

1. lateral: a 1x1 conv (with bias) on each backbone level C_L, min_level <= L <= top, top = min(the backbone's
   highest level, max_level);
2. top-down: from the top, x2 nearest up-sampling of the level above plus the lateral;
3. post-hoc: a 3x3 conv (with bias) on each summed level;
4. coarser levels for RetinaNet: P_{top+1} = 3x3/2 conv (with bias) of the post-hoc P_top (MG's choice; the
   RetinaNet paper takes C5), and each further level the same conv of act(the level below);
5. a batch norm on every output level, with no activation after it.

Layers are named per output level, `endpoint_lL_{lateral,upsample,fuse,post_hoc,coarser,bn}` (MG: `lateral_L`,
`post_hoc_L`, `coarser_L`, `norm_L`), so `model_stats` counts them under P_L.
"""

from __future__ import annotations

import keras

from spinenet_tf.layers.normalization import NormActivationMixin, conv2d
from spinenet_tf.layers.resample import NearestUpsampling
from spinenet_tf.layers.tracking import CheckpointCollections


@keras.saving.register_keras_serializable(package="spinenet_tf")
class FPN(CheckpointCollections, NormActivationMixin, keras.layers.Layer):
    """Feature pyramid: backbone features {level: C_level} -> {level: P_level} for min_level..max_level.

    Args:
        min_level, max_level: Levels of the outputs; the input must hold min_level (and every level up to its top).
        num_filters: Width of every output level.
        activation: Applied only between the coarser levels (P_{top+1} -> P_{top+2}); "relu" as Model Garden's.
        norm_momentum, norm_epsilon, use_sync_bn: Batch-norm settings.

    Call:
        features: {level: [B, H_l, W_l, C_l]} (a `ResNet`'s {2..5}; levels below min_level are ignored). Returns
        {level: [B, H_l, W_l, num_filters]}.

    Example:
        >>> fpn = FPN(num_filters=8)
        >>> outputs = fpn({level: keras.ops.ones((1, 2 ** (7 - level), 2 ** (7 - level), 4)) for level in (3, 4, 5)})
        >>> {level: tuple(x.shape) for level, x in outputs.items()}[7]
        (1, 1, 1, 8)
    """

    def __init__(self, min_level: int = 3, max_level: int = 7, num_filters: int = 256, activation: str = "relu",
                 norm_momentum: float = 0.99, norm_epsilon: float = 1e-3, use_sync_bn: bool = False, **kwargs):
        super().__init__(**kwargs)
        if min_level > max_level:
            raise ValueError(f"min_level={min_level}: must be <= max_level={max_level}")
        self.min_level = min_level
        self.max_level = max_level
        self.num_filters = num_filters
        self._set_norm_activation(activation, norm_momentum, norm_epsilon, use_sync_bn)
        self.norms = {level: self._bn(f"endpoint_l{level}_bn") for level in range(min_level, max_level + 1)}
        self.act = self._act("coarser_act")
        # Set in build(), where the backbone's levels are known.
        self.top_level = None
        self.laterals, self.upsample, self.fuse, self.post_hoc, self.coarser = {}, {}, {}, {}, {}

    def build(self, input_shape):
        input_shape = {int(level): shape for level, shape in input_shape.items()}
        levels = sorted(input_shape)
        self.top_level = min(levels[-1], self.max_level)
        missing = sorted(set(range(self.min_level, self.top_level + 1)) - set(levels))
        if missing or self.min_level > levels[-1]:
            raise ValueError(f"FPN min_level={self.min_level}: the input lacks levels "
                             f"{missing or [self.min_level]} (it has {levels})")
        width = self.num_filters
        for level in range(self.min_level, self.top_level + 1):
            self.laterals[level] = conv2d(width, 1, name=f"endpoint_l{level}_lateral", use_bias=True)
            self.laterals[level].build(input_shape[level])
            self.post_hoc[level] = conv2d(width, 3, name=f"endpoint_l{level}_post_hoc", use_bias=True)
            self.post_hoc[level].build((None, None, None, width))
            if level < self.top_level:
                self.upsample[level] = NearestUpsampling(2, name=f"endpoint_l{level}_upsample")
                self.fuse[level] = keras.layers.Add(name=f"endpoint_l{level}_fuse")
        for level in range(self.top_level + 1, self.max_level + 1):
            self.coarser[level] = conv2d(width, 3, 2, name=f"endpoint_l{level}_coarser", use_bias=True)
            self.coarser[level].build((None, None, None, width))
        for norm in self.norms.values():
            norm.build((None, None, None, width))

    def call(self, features):
        lateral = {level: self.laterals[level](features[level]) for level in self.laterals}
        outputs = {self.top_level: lateral[self.top_level]}
        for level in range(self.top_level - 1, self.min_level - 1, -1):
            outputs[level] = self.fuse[level]([self.upsample[level](outputs[level + 1]), lateral[level]])
        outputs = {level: self.post_hoc[level](outputs[level]) for level in self.post_hoc}
        for level in range(self.top_level + 1, self.max_level + 1):
            x = outputs[level - 1]
            outputs[level] = self.coarser[level](self.act(x) if level > self.top_level + 1 else x)
        return {level: self.norms[level](outputs[level]) for level in range(self.min_level, self.max_level + 1)}

    def compute_output_shape(self, input_shape):
        input_shape = {int(level): shape for level, shape in input_shape.items()}
        shapes = {}
        for level in range(self.min_level, self.max_level + 1):
            if level in input_shape:
                batch, height, width, _ = input_shape[level]
            else:  # a coarser level: 'same' 3x3/2 conv, ceil(size / 2)
                height, width = (None if size is None else -(-size // 2) for size in (height, width))
            shapes[level] = (batch, height, width, self.num_filters)
        return shapes

    def get_config(self):
        return {**super().get_config(), "min_level": self.min_level, "max_level": self.max_level,
                "num_filters": self.num_filters, "activation": self.activation,
                "norm_momentum": self.norm_momentum, "norm_epsilon": self.norm_epsilon,
                "use_sync_bn": self.use_sync_bn}
