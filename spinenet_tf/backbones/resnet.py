"""ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385) as a Keras 3
functional model: the scale-decreased backbone of the SpineNet paper's RetinaNet baseline, R50-FPN
(arXiv:1912.05027, Table 3 / §5), where an FPN (`spinenet_tf.detection.fpn`) turns its C3-C5 into P3-P7.

Mirrors Model Garden's `official/vision/modeling/backbones/resnet.py::ResNet` weight for weight with the defaults
its `retinanet_resnetfpn_coco` experiment uses (`configs/backbones.py::ResNet`): stem_type "v0" (7x7/2 conv + BN +
act, 3x3/2 max-pool), no ResNet-D shortcut, no SE, `scale_stem`, relu, batch norm 0.99 / 1e-3. Each level L2..L5 is a
group of residual or bottleneck blocks (`RESNET_SPECS`, MG's table); the first block of a group projects its shortcut
(always, as MG does) and, from L3 on, has stride 2. Stochastic depth is MG's per group: rate * L / 5 at level L.

The outputs are MG's endpoints, keyed by int level: {2: C2, 3: C3, 4: C4, 5: C5}, the last block of each group
(bottleneck: 4x the group's width). Blocks are named like SpineNet's, `blockNN_lL_bottleneck` (NN counting from the
first L2 block), so `model_stats` breaks the cost down per level.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from spinenet_tf.backbones.spinenet import FeatureSpec
from spinenet_tf.layers.blocks import BottleneckBlock, ResidualBlock
from spinenet_tf.layers.normalization import NormActivationMixin, conv2d
from spinenet_tf.layers.stochastic_depth import stochastic_depth_rate_for_block
from spinenet_tf.layers.tracking import CheckpointCollections

# Model Garden's RESNET_SPECS for the depths of He et al. (Table 1): (block_fn, width, blocks) per level L2..L5.
RESNET_SPECS = {
    18: (("residual", 64, 2), ("residual", 128, 2), ("residual", 256, 2), ("residual", 512, 2)),
    34: (("residual", 64, 3), ("residual", 128, 4), ("residual", 256, 6), ("residual", 512, 3)),
    50: (("bottleneck", 64, 3), ("bottleneck", 128, 4), ("bottleneck", 256, 6), ("bottleneck", 512, 3)),
    101: (("bottleneck", 64, 3), ("bottleneck", 128, 4), ("bottleneck", 256, 23), ("bottleneck", 512, 3)),
    152: (("bottleneck", 64, 3), ("bottleneck", 128, 8), ("bottleneck", 256, 36), ("bottleneck", 512, 3)),
}
_BLOCKS = {"residual": ResidualBlock, "bottleneck": BottleneckBlock}


@keras.saving.register_keras_serializable(package="spinenet_tf")
class ResNet(CheckpointCollections, NormActivationMixin, keras.Model):
    """A ResNet backbone returning C2..C5.

    Args:
        input_shape: (H, W, 3); H and W may be None, else divisible by 2**5 (the stride of C5).
        model_id: Depth, a key of `RESNET_SPECS` (18, 34, 50, 101, 152).
        depth_multiplier: Multiplier of every width, the stem's included (MG's `scale_stem`).
        stochastic_depth_rate: Drop-path rate of the L5 group (MG's `init_stochastic_depth_rate`); level L gets
            rate * L / 5.
        activation: "relu" (Model Garden's default and its ResNet-FPN recipes'), "swish" or "hard_swish".
        norm_momentum, norm_epsilon: Batch-norm settings.
        use_sync_bn: Synchronize batch-norm statistics across replicas under a tf.distribute strategy.

    Example:
        >>> features = ResNet(input_shape=(128, 128, 3))(keras.ops.zeros((1, 128, 128, 3)))
        >>> {level: tuple(x.shape) for level, x in features.items()}[5]
        (1, 4, 4, 2048)
    """

    min_level = 2
    max_level = 5
    size_divisibility = 2 ** max_level  # input height and width must be multiples of this (the stride of C5)

    def __init__(self, input_shape: Sequence[int | None] = (None, None, 3), model_id: int = 50,
                 depth_multiplier: float = 1.0, stochastic_depth_rate: float = 0.0, activation: str = "relu",
                 norm_momentum: float = 0.99, norm_epsilon: float = 1e-3, use_sync_bn: bool = False, **kwargs):
        # === Config ===
        self.image_shape = tuple(input_shape)
        self.model_id = model_id
        self.depth_multiplier = depth_multiplier
        self.stochastic_depth_rate = stochastic_depth_rate
        self._set_norm_activation(activation, norm_momentum, norm_epsilon, use_sync_bn)
        self._check_arguments()

        # === Functional model ===
        inputs = keras.Input(shape=self.image_shape, name="image")
        x = conv2d(int(64 * depth_multiplier), 7, 2, name="stem_conv")(inputs)
        x = self._bn("stem_bn")(x)
        x = self._act("stem_act")(x)
        x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
        endpoints, index = {}, 0
        for level, (block_fn, width, repeats) in enumerate(RESNET_SPECS[model_id], start=2):
            drop_rate = stochastic_depth_rate_for_block(stochastic_depth_rate, level, 5)
            for repeat in range(repeats):
                first = repeat == 0
                x = _BLOCKS[block_fn](int(width * depth_multiplier), strides=2 if first and level > 2 else 1,
                                      use_projection=first, stochastic_depth_rate=drop_rate,
                                      name=f"block{index:02d}_l{level}_{block_fn}", **self._norm_kwargs())(x)
                index += 1
            endpoints[level] = x
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    def _check_arguments(self) -> None:
        if self.model_id not in RESNET_SPECS:
            raise ValueError(f"model_id={self.model_id}: must be one of {', '.join(map(str, RESNET_SPECS))}")
        if len(self.image_shape) != 3 or self.image_shape[-1] != 3:
            raise ValueError(f"input_shape={self.image_shape}: expected (H, W, 3)")
        for name, size in zip(("height", "width"), self.image_shape[:2]):
            if size is not None and size % self.size_divisibility:
                raise ValueError(f"input {name} {size} is not divisible by {self.size_divisibility} (the stride of "
                                 f"C{self.max_level})")
        if self.depth_multiplier <= 0:
            raise ValueError(f"depth_multiplier={self.depth_multiplier}: must be > 0")
        if not 0.0 <= self.stochastic_depth_rate < 1.0:
            raise ValueError(f"stochastic_depth_rate={self.stochastic_depth_rate}: must be in [0, 1)")

    def _norm_kwargs(self) -> dict:
        return dict(activation=self.activation, norm_momentum=self.norm_momentum, norm_epsilon=self.norm_epsilon,
                    use_sync_bn=self.use_sync_bn)

    # === Properties ===
    @property
    def output_specs(self) -> dict[int, FeatureSpec]:
        """Level -> stride and channels of each endpoint."""
        return {level: FeatureSpec(2 ** level, _BLOCKS[block_fn].expansion * int(width * self.depth_multiplier))
                for level, (block_fn, width, _) in enumerate(RESNET_SPECS[self.model_id], start=2)}

    # === Config ===
    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable, "input_shape": list(self.image_shape),
                "model_id": self.model_id, "depth_multiplier": self.depth_multiplier,
                "stochastic_depth_rate": self.stochastic_depth_rate, "activation": self.activation,
                "norm_momentum": self.norm_momentum, "norm_epsilon": self.norm_epsilon,
                "use_sync_bn": self.use_sync_bn}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
