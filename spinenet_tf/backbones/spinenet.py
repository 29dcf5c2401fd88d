"""SpineNet and SpineNet-Mobile: scale-permuted backbones as Keras 3 functional models.

SpineNet: Du et al., CVPR 2020 (arXiv:1912.05027). SpineNet-Mobile: Du et al., ECCV 2020 (arXiv:2010.11426).
Mirrors Model Garden's `official/vision/modeling/backbones/spinenet.py` and `spinenet_mobile.py` weight for weight;
the two share one network core here and differ only in stem, block and resampling (`SpineNetMobile` overrides
those hooks). Conventions: level L means stride 2**L; inputs are NHWC images; outputs are a dict
`{level (int): P_level}` for level in [min_level, max_level].

How the network is wired (`plan_network`): blocks 0..m-1 are the stem; block k >= m is row k - m of the block-spec
table. SpineNet's stem is a scale-decreased ResNet path, `stem_blocks_per_level` bottleneck blocks at L2..L5 with a
stride-2 first block at each new level (paper §3, Table 1); the default (2, 0, 0, 0) is Model Garden's two L2
blocks (m = 2), and SpineNet-Mobile's stem is fixed (an L1 and an L2 MBConv block). A block resamples its parents
(two; one in the connection-ablation tables) to its own level and width, sums them (an output block also sums every
earlier table block of its level and width that nothing has consumed yet, as Model Garden does), applies the activation
and runs its block group (`block_repeats` blocks). Each endpoint P_L is a 1x1 conv + BN + act on the output block
at level L. Blocks that feed no endpoint (e.g. Model Garden's level-2 output block 17) are not built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import keras

from spinenet_tf.backbones.block_specs import (DEFAULT_STEM_BLOCKS_PER_LEVEL, SPINENET_BLOCK_SPECS,
                                               SPINENET_MOBILE_BLOCK_SPECS, BlockSpec,
                                               normalize_stem_blocks_per_level, parse_block_specs, stem_block_levels,
                                               validate_block_specs)
from spinenet_tf.layers.blocks import BottleneckBlock, MBConvBlock, ResidualBlock
from spinenet_tf.layers.normalization import NormActivationMixin, conv2d
from spinenet_tf.layers.resample import CrossScaleResample, MobileResample
from spinenet_tf.layers.stochastic_depth import stochastic_depth_rate_for_block
from spinenet_tf.layers.tracking import CheckpointCollections

# Block width per level before `filter_size_scale` (Model Garden FILTER_SIZE_MAP; a bottleneck outputs 4x this).
SPINENET_FILTER_SIZE_MAP = {1: 32, 2: 64, 3: 128, 4: 256, 5: 256, 6: 256, 7: 256}
# SpineNet-Mobile widths (paper appendix A: {16, 24, 40, 80, 112, 112, 112} for L1..L7; level 0 is the stem conv).
SPINENET_MOBILE_FILTER_SIZE_MAP = {0: 8, 1: 16, 2: 24, 3: 40, 4: 80, 5: 112, 6: 112, 7: 112}


@dataclasses.dataclass(frozen=True)
class BlockNode:
    """One block of a planned network.

    Attributes:
        index: Position in [stem 0 .. stem m-1, block m, ...].
        level: Feature level.
        block_fn: "residual", "bottleneck" or "mbconv".
        channels: Output channels.
        inputs: The parents that are resampled into this block (empty for stem blocks).
        extra_inputs: Earlier unconsumed blocks of the same level and width, summed in as they are (outputs only).
        is_output: Whether the block is an output block of the table.
        used: Whether an endpoint in [min_level, max_level] depends on it (unused blocks are not built).
    """

    index: int
    level: int
    block_fn: str
    channels: int
    inputs: tuple[int, ...]
    extra_inputs: tuple[int, ...]
    is_output: bool
    used: bool


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """What the backbone outputs at one level."""

    stride: int
    channels: int


def plan_network(block_specs: Sequence[BlockSpec], stem: Sequence[tuple[int, str]],
                 channels: Callable[[int, str], int], min_level: int, max_level: int) -> list[BlockNode]:
    """Wires a scale-permuted network without building it.

    Args:
        block_specs: The table (validated here).
        stem: (level, block_fn) of the stem blocks, in order.
        channels: Output channels of a block given (level, block_fn).
        min_level, max_level: The endpoint levels.

    Returns:
        A BlockNode per block, stem included.

    Raises:
        ValueError: If the table breaks a rule (see `validate_block_specs`) or two output blocks share a level.
    """
    validate_block_specs(block_specs, min_level, max_level, stem_levels=tuple(level for level, _ in stem))
    levels = [level for level, _ in stem] + [spec.level for spec in block_specs]
    fns = [fn for _, fn in stem] + [spec.block_fn for spec in block_specs]
    widths = [channels(level, fn) for level, fn in zip(levels, fns)]
    # The fusion rule (paper §3.3) joins the scale-permuted network's unconsumed blocks, not the stem's: each stem
    # block but the last feeds the next, and stem blocks after the last one the table reads are not built. (Model
    # Garden would also sum an unread stem block into an L2 output block; none of its tables leaves one unread.)
    out_degree = [1] * len(stem) + [0] * len(block_specs)
    inputs: list[tuple[int, ...]] = [()] * len(stem)
    extras: list[tuple[int, ...]] = [()] * len(stem)
    output_of_level: dict[int, int] = {}
    for row, spec in enumerate(block_specs):
        index = row + len(stem)
        for parent in spec.input_offsets:
            out_degree[parent] += 1
        extra = ()
        if spec.is_output:
            # Model Garden sums unconsumed blocks of the same size into an output block (`num_outgoing_connections`).
            extra = tuple(j for j in range(index) if out_degree[j] == 0 and levels[j] == spec.level
                          and widths[j] == widths[index])
            for j in extra:
                out_degree[j] += 1
            if spec.level in output_of_level:
                raise ValueError(f"block {index} (row {row}): level {spec.level} already has output block "
                                 f"{output_of_level[spec.level]}")
            output_of_level[spec.level] = index
        inputs.append(tuple(spec.input_offsets))
        extras.append(extra)

    used = [False] * len(levels)
    todo = [output_of_level[level] for level in range(min_level, max_level + 1)]
    while todo:
        index = todo.pop()
        if not used[index]:
            used[index] = True
            todo.extend(inputs[index] + extras[index])
    if len(stem) > 1:  # each stem block feeds the next one
        for index in range(len(stem) - 1, 0, -1):
            used[index - 1] = used[index - 1] or used[index]
    is_output = [False] * len(stem) + [spec.is_output for spec in block_specs]
    return [BlockNode(i, levels[i], fns[i], widths[i], inputs[i], extras[i], is_output[i], used[i])
            for i in range(len(levels))]


def block_name(node: BlockNode) -> str:
    """Structural layer-name prefix of a block, e.g. `block07_l5_residual` or `stem_block1`."""
    return f"stem_block{node.index}" if not node.inputs else f"block{node.index:02d}_l{node.level}_{node.block_fn}"


@keras.saving.register_keras_serializable(package="spinenet_tf")
class SpineNet(CheckpointCollections, NormActivationMixin, keras.Model):
    """A SpineNet backbone (residual/bottleneck blocks, cross-scale resampling with alpha).

    Args:
        input_shape: (H, W, 3); H and W may be None, else divisible by 2**max_level.
        min_level, max_level: Levels of the endpoints P_min..P_max.
        block_specs: The scale-permuted table; rows as `BlockSpec` or (level, block_fn, (in0, in1), is_output).
            Defaults to `SPINENET_BLOCK_SPECS` (SpineNet-49). Input offsets count the stem blocks first.
        stem_blocks_per_level: Bottleneck blocks of the scale-decreased stem at L2, L3, L4, L5 (paper Table 1);
            each new level starts with a stride-2 block. (2, 0, 0, 0), Model Garden's stem, gives m = 2 stem
            blocks; e.g. (2, 2, 2, 1) is R23-SP30's (m = 7). Every stem block is a candidate parent.
        endpoints_num_filters: Width of every endpoint.
        resample_alpha: Narrowing factor of the cross-scale connections.
        block_repeats: Blocks per block group (2 for SpineNet-96, 3 for 143, 4 for 190).
        filter_size_scale: Multiplier of every block width (the stem's 7x7 conv keeps 64).
        stochastic_depth_rate: Drop-path rate of the last block; block i of n gets rate * i / n.
        activation: "relu", "swish" or "hard_swish".
        norm_momentum, norm_epsilon: Batch-norm settings.
        use_sync_bn: Synchronize batch-norm statistics across replicas under a tf.distribute strategy.

    Example:
        >>> features = SpineNet(input_shape=(128, 128, 3), filter_size_scale=0.25)(keras.ops.zeros((1, 128, 128, 3)))
        >>> {level: tuple(x.shape) for level, x in features.items()}[3]
        (1, 16, 16, 256)
    """

    default_block_specs = SPINENET_BLOCK_SPECS
    filter_size_map = SPINENET_FILTER_SIZE_MAP

    def __init__(self, input_shape: Sequence[int | None] = (None, None, 3), min_level: int = 3, max_level: int = 7,
                 block_specs: Sequence | None = None, endpoints_num_filters: int = 256, resample_alpha: float = 0.5,
                 block_repeats: int = 1, filter_size_scale: float = 1.0, stochastic_depth_rate: float = 0.0,
                 activation: str = "relu", norm_momentum: float = 0.99, norm_epsilon: float = 1e-3,
                 use_sync_bn: bool = False,
                 stem_blocks_per_level: Sequence[int] | None = DEFAULT_STEM_BLOCKS_PER_LEVEL, **kwargs):
        # === Config ===
        self.image_shape = tuple(input_shape)
        self.min_level = min_level
        self.max_level = max_level
        self.block_specs = parse_block_specs(self.default_block_specs if block_specs is None else block_specs)
        self.stem_blocks_per_level = (None if stem_blocks_per_level is None
                                      else normalize_stem_blocks_per_level(stem_blocks_per_level))
        self.stem = self.stem_blocks(self.stem_blocks_per_level)
        self.endpoints_num_filters = endpoints_num_filters
        self.resample_alpha = resample_alpha
        self.block_repeats = block_repeats
        self.filter_size_scale = filter_size_scale
        self.stochastic_depth_rate = stochastic_depth_rate
        self._set_norm_activation(activation, norm_momentum, norm_epsilon, use_sync_bn)
        self._check_arguments()
        self.plan = self.network_plan(self.block_specs, min_level, max_level, filter_size_scale,
                                      self.stem_blocks_per_level)

        # === Functional model ===
        inputs = keras.Input(shape=self.image_shape, name="image")
        features = self._stem(inputs)
        features = self._scale_permuted_blocks(features)
        endpoints = self._endpoints(features)
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    # --- arguments -------------------------------------------------------------------------------------------
    def _check_arguments(self) -> None:
        if len(self.image_shape) != 3 or self.image_shape[-1] != 3:
            raise ValueError(f"input_shape={self.image_shape}: expected (H, W, 3)")
        divisor = 2 ** self.max_level
        for name, size in zip(("height", "width"), self.image_shape[:2]):
            if size is not None and size % divisor:
                raise ValueError(f"input {name} {size} is not divisible by {divisor} (2**max_level, "
                                 f"max_level={self.max_level})")
        if self.block_repeats < 1:
            raise ValueError(f"block_repeats={self.block_repeats}: must be >= 1")
        if self.filter_size_scale <= 0:
            raise ValueError(f"filter_size_scale={self.filter_size_scale}: must be > 0")
        if not 0.0 <= self.stochastic_depth_rate < 1.0:
            raise ValueError(f"stochastic_depth_rate={self.stochastic_depth_rate}: must be in [0, 1)")

    @classmethod
    def network_plan(cls, block_specs: Sequence | None = None, min_level: int = 3, max_level: int = 7,
                     filter_size_scale: float = 1.0,
                     stem_blocks_per_level: Sequence[int] | None = DEFAULT_STEM_BLOCKS_PER_LEVEL) -> list[BlockNode]:
        """The wiring of this family's network for these settings, without building it (see `plan_network`)."""
        specs = parse_block_specs(cls.default_block_specs if block_specs is None else block_specs)
        return plan_network(specs, cls.stem_blocks(stem_blocks_per_level),
                            lambda level, fn: cls.block_channels(level, fn, filter_size_scale), min_level, max_level)

    # --- hooks that SpineNetMobile overrides ------------------------------------------------------------------
    @classmethod
    def stem_blocks(cls, stem_blocks_per_level: Sequence[int] | None = DEFAULT_STEM_BLOCKS_PER_LEVEL
                    ) -> tuple[tuple[int, str], ...]:
        """(level, block_fn) of each stem block: bottlenecks, `stem_blocks_per_level` at L2..L5."""
        if stem_blocks_per_level is None:
            stem_blocks_per_level = DEFAULT_STEM_BLOCKS_PER_LEVEL
        return tuple((level, "bottleneck") for level in stem_block_levels(stem_blocks_per_level))

    @classmethod
    def block_channels(cls, level: int, block_fn: str, filter_size_scale: float) -> int:
        """Output channels of a block: its width, times 4 for a bottleneck."""
        return int(cls.filter_size_map[level] * filter_size_scale) * (4 if block_fn == "bottleneck" else 1)

    def _block_width(self, level: int) -> int:
        return int(self.filter_size_map[level] * self.filter_size_scale)

    def _norm_kwargs(self) -> dict:
        return dict(activation=self.activation, norm_momentum=self.norm_momentum, norm_epsilon=self.norm_epsilon,
                    use_sync_bn=self.use_sync_bn)

    def _block_group(self, x, node: BlockNode, drop_rate: float, stride: int = 1):
        """`block_repeats` blocks; the first projects the shortcut when its input width differs."""
        block_cls = {"bottleneck": BottleneckBlock, "residual": ResidualBlock}[node.block_fn]
        width = self._block_width(node.level)
        for repeat in range(self.block_repeats):
            name = block_name(node) + (f"_r{repeat + 1}" if repeat else "")
            use_projection = repeat == 0 and (x.shape[-1] != node.channels or stride != 1)
            x = block_cls(width, strides=stride if repeat == 0 else 1, use_projection=use_projection,
                          stochastic_depth_rate=drop_rate, name=name, **self._norm_kwargs())(x)
        return x

    def _stem(self, inputs) -> list:
        """Conv 7x7/2 (64) -> BN -> act -> max-pool 3x3/2 -> the stem's bottleneck groups (blocks 0..m-1), the first
        of each level after L2 with stride 2 (ResNet's stage transition); by default two level-2 groups. Stem
        blocks after the last one the table uses are not built."""
        x = conv2d(64, 7, 2, name="stem_conv")(inputs)
        x = self._bn("stem_bn")(x)
        x = self._act("stem_act")(x)
        x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
        features, level = [], 2
        for node in self.plan[:len(self.stem)]:
            if not node.used:
                break  # `plan_network` marks a stem block used whenever a later one is
            x = self._block_group(x, node, drop_rate=0.0, stride=2 ** (node.level - level))
            level = node.level
            features.append(x)
        return features

    def _resample(self, x, parent: BlockNode, node: BlockNode, name: str):
        width = parent.channels // 4 if parent.block_fn == "bottleneck" else parent.channels
        return CrossScaleResample(node.level - parent.level, int(width * self.resample_alpha), node.channels,
                                  name=name, **self._norm_kwargs())(x)

    # --- the network ------------------------------------------------------------------------------------------
    def _scale_permuted_blocks(self, features: list) -> list:
        """Builds every used block of the table in order; unused ones stay None."""
        features = features + [None] * (len(self.plan) - len(features))
        num_stem, num_blocks = len(self.stem), len(self.block_specs)
        for node in self.plan[num_stem:]:
            if not node.used:
                continue
            prefix = f"block{node.index:02d}"
            parents = [self._resample(features[j], self.plan[j], node, f"{prefix}_resample{k}")
                       for k, j in enumerate(node.inputs)]
            parents += [features[j] for j in node.extra_inputs]
            # A single parent (connection-ablation tables) needs no sum.
            x = keras.layers.Add(name=f"{prefix}_fuse")(parents) if len(parents) > 1 else parents[0]
            x = self._act(f"{prefix}_fuse_act")(x)
            # Model Garden: the i-th table row (1-based) of n gets rate * i / n; the stem none.
            drop_rate = stochastic_depth_rate_for_block(self.stochastic_depth_rate, node.index - num_stem + 1,
                                                        num_blocks)
            features[node.index] = self._block_group(x, node, drop_rate)
        return features

    def _endpoints(self, features: list) -> dict:
        """P_L = act(BN(1x1 conv(output block at level L))) for L in [min_level, max_level]."""
        output_of_level = {node.level: node.index for node in self.plan if node.is_output}
        endpoints = {}
        for level in range(self.min_level, self.max_level + 1):
            x = conv2d(self.endpoints_num_filters, 1, name=f"endpoint_l{level}_conv")(features[output_of_level[level]])
            x = self._bn(f"endpoint_l{level}_bn")(x)
            endpoints[level] = self._act(f"endpoint_l{level}_act")(x)
        return endpoints

    # === Properties ===
    @property
    def output_specs(self) -> dict[int, FeatureSpec]:
        """Level -> stride and channels of each endpoint."""
        return {level: FeatureSpec(2 ** level, self.endpoints_num_filters)
                for level in range(self.min_level, self.max_level + 1)}

    @property
    def size_divisibility(self) -> int:
        """Input height and width must be multiples of this (2**max_level)."""
        return 2 ** self.max_level

    # === Config ===
    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable, "input_shape": list(self.image_shape),
                "min_level": self.min_level, "max_level": self.max_level,
                "block_specs": [spec.to_list() for spec in self.block_specs],
                "endpoints_num_filters": self.endpoints_num_filters, "resample_alpha": self.resample_alpha,
                "block_repeats": self.block_repeats, "filter_size_scale": self.filter_size_scale,
                "stochastic_depth_rate": self.stochastic_depth_rate, "activation": self.activation,
                "norm_momentum": self.norm_momentum, "norm_epsilon": self.norm_epsilon,
                "use_sync_bn": self.use_sync_bn,
                "stem_blocks_per_level": (None if self.stem_blocks_per_level is None
                                          else list(self.stem_blocks_per_level))}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="spinenet_tf")
class SpineNetMobile(SpineNet):
    """A SpineNet-Mobile backbone: MBConv blocks, depthwise resampling, no alpha.

    Args:
        se_ratio: Squeeze-and-excitation ratio of the MBConv blocks.
        expand_ratio: Expansion of the MBConv blocks.
        Other arguments: as `SpineNet` (without `resample_alpha`); `block_specs` defaults to
        `SPINENET_MOBILE_BLOCK_SPECS` and `endpoints_num_filters` to 48 (Mobile-49).

    Example:
        >>> features = SpineNetMobile(input_shape=(128, 128, 3))(keras.ops.zeros((1, 128, 128, 3)))
        >>> tuple(features[7].shape)
        (1, 1, 1, 48)
    """

    default_block_specs = SPINENET_MOBILE_BLOCK_SPECS
    filter_size_map = SPINENET_MOBILE_FILTER_SIZE_MAP

    def __init__(self, input_shape: Sequence[int | None] = (None, None, 3), min_level: int = 3, max_level: int = 7,
                 block_specs: Sequence | None = None, endpoints_num_filters: int = 48, se_ratio: float = 0.2,
                 expand_ratio: int = 6, block_repeats: int = 1, filter_size_scale: float = 1.0,
                 stochastic_depth_rate: float = 0.0, activation: str = "relu", norm_momentum: float = 0.99,
                 norm_epsilon: float = 1e-3, use_sync_bn: bool = False, stem_blocks_per_level: None = None,
                 **kwargs):
        self.se_ratio = se_ratio
        self.expand_ratio = expand_ratio
        super().__init__(input_shape=input_shape, min_level=min_level, max_level=max_level,
                         block_specs=block_specs, endpoints_num_filters=endpoints_num_filters, resample_alpha=None,
                         block_repeats=block_repeats, filter_size_scale=filter_size_scale,
                         stochastic_depth_rate=stochastic_depth_rate, activation=activation,
                         norm_momentum=norm_momentum, norm_epsilon=norm_epsilon, use_sync_bn=use_sync_bn,
                         stem_blocks_per_level=stem_blocks_per_level, **kwargs)

    @classmethod
    def network_plan(cls, block_specs: Sequence | None = None, min_level: int = 3, max_level: int = 7,
                     filter_size_scale: float = 1.0, stem_blocks_per_level: None = None) -> list[BlockNode]:
        return super().network_plan(block_specs, min_level, max_level, filter_size_scale, stem_blocks_per_level)

    @classmethod
    def stem_blocks(cls, stem_blocks_per_level: None = None) -> tuple[tuple[int, str], ...]:
        """The fixed stem: an L1 and an L2 MBConv block (blocks 0 and 1)."""
        if stem_blocks_per_level is not None:
            raise ValueError(f"stem_blocks_per_level={tuple(stem_blocks_per_level)}: SpineNet-Mobile's stem is fixed "
                             "(an L1 and an L2 MBConv block)")
        return ((1, "mbconv"), (2, "mbconv"))

    @classmethod
    def block_channels(cls, level: int, block_fn: str, filter_size_scale: float) -> int:
        return int(cls.filter_size_map[level] * filter_size_scale)

    def _block_group(self, x, node: BlockNode, drop_rate: float, stride: int = 1):
        in_filters = x.shape[-1]
        for repeat in range(self.block_repeats):
            name = block_name(node) + (f"_r{repeat + 1}" if repeat else "")
            # NOTE: Model Garden feeds every repeat the group's input (and a sigmoid SE gate); repeats here chain.
            # No published mobile model uses block_repeats > 1.
            x = MBConvBlock(in_filters if repeat == 0 else node.channels, node.channels,
                            strides=stride if repeat == 0 else 1, expand_ratio=self.expand_ratio,
                            se_ratio=self.se_ratio, stochastic_depth_rate=drop_rate, name=name,
                            **self._norm_kwargs())(x)
        return x

    def _stem(self, inputs) -> list:
        """Conv 3x3/2 (8 x scale) -> BN -> act -> MBConv to level 1 (stride 1) -> MBConv to level 2 (stride 2)."""
        x = conv2d(self._block_width(0), 3, 2, name="stem_conv")(inputs)
        x = self._bn("stem_bn")(x)
        x = self._act("stem_act")(x)
        features = []
        for node, stride in zip(self.plan[:2], (1, 2)):
            x = self._block_group(x, node, drop_rate=0.0, stride=stride)
            features.append(x)
        return features

    def _resample(self, x, parent: BlockNode, node: BlockNode, name: str):
        return MobileResample(node.level - parent.level, node.channels, name=name, **self._norm_kwargs())(x)

    def get_config(self) -> dict:
        config = super().get_config()
        del config["resample_alpha"], config["stem_blocks_per_level"]
        return {**config, "se_ratio": self.se_ratio, "expand_ratio": self.expand_ratio}
