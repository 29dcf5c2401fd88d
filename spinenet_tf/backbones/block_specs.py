"""The block-spec tables of the scale-permuted networks found by NAS, and their checks.

SpineNet: Du et al., "SpineNet: Learning Scale-Permuted Backbone for Recognition and Localization", CVPR 2020
(arXiv:1912.05027). SpineNet-Mobile: Du et al., "Efficient Scale-Permuted Backbone with Learned Resource
Distribution", ECCV 2020 (arXiv:2010.11426). The tables are Model Garden's `SPINENET_BLOCK_SPECS`
(`official/vision/modeling/backbones/spinenet.py`) and `SPINENET_MOBILE_BLOCK_SPECS` (`spinenet_mobile.py`),
kept row for row so that Model Garden checkpoints map onto our layers. R0-SP53 (paper §3.3, Table 1, Fig. 4(c)) is the
ResNet-50 block allocation scale-permuted by the search; Google ships no table for it (see `R0_SP53_BLOCK_SPECS`).

The stem: a scale-decreased ResNet path before the table, described by its bottleneck blocks per level L2..L5
(`stem_blocks_per_level`, the paper's Table 1 "{L2, L3, L4, L5}" column). SpineNet's default is (2, 0, 0, 0), the two
level-2 blocks of Model Garden's `_build_stem`; ResNet-50's is (3, 4, 6, 3). Every stem block is a candidate parent:
with m stem blocks, input offsets index the list [stem 0 .. stem m-1, table row 0 (block m), row 1 (block m+1), ...].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

BLOCK_FNS = ("residual", "bottleneck", "mbconv")
# The levels a ResNet-style stem may cover: blocks per level L2..L5, stride-2 transitions between levels.
STEM_LEVELS = (2, 3, 4, 5)
DEFAULT_STEM_BLOCKS_PER_LEVEL = (2, 0, 0, 0)   # SpineNet and R0-SP53: Model Garden's two level-2 stem blocks
RESNET50_STEM_BLOCKS_PER_LEVEL = (3, 4, 6, 3)  # ResNet-50's scale-decreased path (paper Table 1, row R50)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block of a scale-permuted network.

    Attributes:
        level: Feature level L; the block's output has stride 2**L.
        block_fn: "residual", "bottleneck" or "mbconv".
        input_offsets: Indices of the parent blocks in the list [stem 0 .. stem m-1, block m, ...]; all earlier.
            Two for every searched table (paper §3.1); one for the connection-ablation tables (paper §5.5, Table 9:
            "one block only connects to one other block").
        is_output: Whether the block feeds the endpoint P_level.
    """

    level: int
    block_fn: str
    input_offsets: tuple[int, ...]
    is_output: bool

    def to_list(self) -> list:
        """A JSON-friendly row, the inverse of `BlockSpec.from_list`."""
        return [self.level, self.block_fn, list(self.input_offsets), self.is_output]

    @classmethod
    def from_list(cls, row: Sequence) -> "BlockSpec":
        if isinstance(row, BlockSpec):
            return row
        if isinstance(row, dict):
            return cls(int(row["level"]), str(row["block_fn"]), tuple(row["input_offsets"]), bool(row["is_output"]))
        if len(row) != 4:
            raise ValueError(f"block spec {row!r}: expected (level, block_fn, (input0, input1), is_output)")
        level, block_fn, offsets, is_output = row
        return cls(int(level), str(block_fn), tuple(int(o) for o in offsets), bool(is_output))


def _rows(*rows) -> tuple[BlockSpec, ...]:
    return tuple(BlockSpec.from_list(row) for row in rows)


# Block indices: 0 and 1 are the two stem blocks (level 2 for SpineNet; levels 1 and 2 for SpineNet-Mobile);
# the table's k-th row (from 0) is block k + 2, and its inputs name two earlier indices.
#
#     stem0   stem1   block2   block3   ...   block17
#      [0]     [1]     [2]      [3]            [17]
#                       ^ inputs (0, 1)
#
#                        level  block_fn      inputs     output      # index
SPINENET_BLOCK_SPECS = _rows(
                        (2,     "bottleneck", (0, 1),    False),     # 2
                        (4,     "residual",   (0, 1),    False),     # 3
                        (3,     "bottleneck", (2, 3),    False),     # 4
                        (4,     "bottleneck", (2, 4),    False),     # 5
                        (6,     "residual",   (3, 5),    False),     # 6
                        (4,     "bottleneck", (3, 5),    False),     # 7
                        (5,     "residual",   (6, 7),    False),     # 8
                        (7,     "residual",   (6, 8),    False),     # 9
                        (5,     "bottleneck", (8, 9),    False),     # 10
                        (5,     "bottleneck", (8, 10),   False),     # 11
                        (4,     "bottleneck", (5, 10),   True),      # 12
                        (3,     "bottleneck", (4, 10),   True),      # 13
                        (5,     "bottleneck", (7, 12),   True),      # 14
                        (7,     "bottleneck", (5, 14),   True),      # 15
                        (6,     "bottleneck", (12, 14),  True),      # 16
                        (2,     "bottleneck", (2, 13),   True),      # 17  Model Garden only (absent in the
)                                                                    #     authors' TPU code); unused for P3-P7

#                               level  block_fn  inputs     output      # index
SPINENET_MOBILE_BLOCK_SPECS = _rows(
                               (2,     "mbconv", (0, 1),    False),     # 2
                               (2,     "mbconv", (1, 2),    False),     # 3
                               (4,     "mbconv", (1, 2),    False),     # 4
                               (3,     "mbconv", (3, 4),    False),     # 5
                               (4,     "mbconv", (3, 5),    False),     # 6
                               (6,     "mbconv", (4, 6),    False),     # 7
                               (4,     "mbconv", (4, 6),    False),     # 8
                               (5,     "mbconv", (7, 8),    False),     # 9
                               (7,     "mbconv", (7, 9),    False),     # 10
                               (5,     "mbconv", (9, 10),   False),     # 11
                               (5,     "mbconv", (9, 11),   False),     # 12
                               (4,     "mbconv", (6, 11),   True),      # 13
                               (3,     "mbconv", (5, 11),   True),      # 14
                               (5,     "mbconv", (8, 13),   True),      # 15
                               (7,     "mbconv", (6, 15),   True),      # 16
                               (6,     "mbconv", (13, 15),  True),      # 17
)


# R0-SP53 (paper §3.3, Table 1: stem {2, 0, 0, 0}, scale-permuted {L2 1, L3 4, L4 6, L5 2, L6 1, L7 1}; drawn in
# Fig. 4(c); 40.7 AP with protocol A). The paper prints no table and neither Model Garden nor the authors' TPU code
# ships one; this is the public hand transcription of Fig. 4(c) in hyperion-ml/hyperion
# `hyperion/torch/narchs/spinenet.py` (`R0_SP53_BLOCK_SPECS`, commit 01797fd), rows 2-16 (its rows 0-1 are the
# stem). Checks against the paper (tests/backbones/block_specs_test.py): 17 bottlenecks allocated as Table 1 says
# (ResNet-50's, one L5 block traded for an L6 and an L7 block); 10 intermediate then 5 output blocks (§3.1 permutes
# them separately); every intermediate block's parents among the last 5 blocks built (§5.1); RetinaNet at 640 costs
# 95.0 B multiply-adds, which fits "SpineNet-49 (85.4 B) ... 10% fewer FLOPs than R0-SP53" (§5.3).
# Block 11 feeds no later block, so by the fusion rule (`plan_network`) it is summed into the L4 output block 13.
#
#                         level  block_fn      inputs     output      # index
R0_SP53_BLOCK_SPECS = _rows(
                         (2,     "bottleneck", (0, 1),    False),     # 2
                         (3,     "bottleneck", (0, 1),    False),     # 3
                         (3,     "bottleneck", (2, 3),    False),     # 4
                         (4,     "bottleneck", (2, 4),    False),     # 5
                         (4,     "bottleneck", (3, 5),    False),     # 6
                         (3,     "bottleneck", (5, 6),    False),     # 7
                         (5,     "bottleneck", (4, 7),    False),     # 8
                         (4,     "bottleneck", (4, 8),    False),     # 9
                         (4,     "bottleneck", (8, 9),    False),     # 10
                         (4,     "bottleneck", (8, 10),   False),     # 11
                         (3,     "bottleneck", (4, 10),   True),      # 12
                         (4,     "bottleneck", (6, 7),    True),      # 13
                         (5,     "bottleneck", (8, 13),   True),      # 14
                         (7,     "bottleneck", (6, 9),    True),      # 15
                         (6,     "bottleneck", (7, 9),    True),      # 16
)


def stem_block_levels(stem_blocks_per_level: Sequence[int] = DEFAULT_STEM_BLOCKS_PER_LEVEL) -> tuple[int, ...]:
    """The level of each stem block, in build order: (2, 0, 0, 0) -> (2, 2); (1, 1, 1, 1) -> (2, 3, 4, 5).

    Args:
        stem_blocks_per_level: Bottleneck blocks at L2, L3, L4, L5 (up to 4 counts; missing ones are 0). The levels
            must be contiguous from L2 (a ResNet stage changes the stride by 2 only), with at least one L2 block.

    Raises:
        ValueError: Naming the rule the counts break.
    """
    counts = tuple(stem_blocks_per_level)
    if not 1 <= len(counts) <= len(STEM_LEVELS) or any(int(n) != n or n < 0 for n in counts):
        raise ValueError(f"stem_blocks_per_level={counts}: expected up to {len(STEM_LEVELS)} block counts >= 0 "
                         f"for levels {', '.join(f'L{level}' for level in STEM_LEVELS)}")
    if counts[0] < 1:
        raise ValueError(f"stem_blocks_per_level={counts}: the stem needs at least one L2 block")
    last = max(i for i, n in enumerate(counts) if n)
    if not all(counts[: last + 1]):
        raise ValueError(f"stem_blocks_per_level={counts}: levels must be contiguous from L2 (no level skipped)")
    return tuple(level for level, n in zip(STEM_LEVELS, counts) for _ in range(int(n)))


def normalize_stem_blocks_per_level(stem_blocks_per_level: Sequence[int]) -> tuple[int, int, int, int]:
    """Validated counts padded to the 4 levels L2..L5: (2,) -> (2, 0, 0, 0)."""
    stem_block_levels(stem_blocks_per_level)
    counts = tuple(int(n) for n in stem_blocks_per_level)
    return counts + (0,) * (len(STEM_LEVELS) - len(counts))


def parse_block_specs(specs: Iterable) -> tuple[BlockSpec, ...]:
    """Accepts BlockSpecs, 4-item rows or dicts (as written by `get_config`) and returns BlockSpecs."""
    return tuple(BlockSpec.from_list(row) for row in specs)


def validate_block_specs(specs: Sequence[BlockSpec], min_level: int, max_level: int,
                         stem_levels: tuple[int, int] = (2, 2)) -> None:
    """Raises ValueError naming the block and the rule it breaks.

    Args:
        specs: The table; row r is block m + r, where m = len(stem_levels).
        min_level, max_level: The endpoint levels.
        stem_levels: The level of each stem block (`stem_block_levels`); default SpineNet's two L2 blocks.

    Rules: each block_fn is known; each level lies between the lowest stem level and max_level (blocks below
    min_level are allowed, they just feed no endpoint); one or two input offsets, each naming an earlier block
    (a stem block or an earlier row); the output blocks cover every level in [min_level, max_level].
    """
    if not 1 <= min_level <= max_level:
        raise ValueError(f"min_level={min_level}, max_level={max_level}: need 1 <= min_level <= max_level")
    num_stem = len(stem_levels)
    for row, spec in enumerate(specs):
        index = row + num_stem
        where = f"block {index} (row {row})"
        if spec.block_fn not in BLOCK_FNS:
            raise ValueError(f"{where}: block_fn {spec.block_fn!r} is not one of {', '.join(BLOCK_FNS)}")
        if not min(stem_levels) <= spec.level <= max_level:
            raise ValueError(f"{where}: level {spec.level} is outside [{min(stem_levels)}, {max_level}] "
                             f"(max_level={max_level})")
        if len(spec.input_offsets) not in (1, 2):
            raise ValueError(f"{where}: needs one or two input offsets, got {spec.input_offsets}")
        for offset in spec.input_offsets:
            if not 0 <= offset < index:
                raise ValueError(f"{where}: input offset {offset} is not an earlier block (must be in [0, {index}))")
    covered = {spec.level for spec in specs if spec.is_output}
    missing = [level for level in range(min_level, max_level + 1) if level not in covered]
    if missing:
        raise ValueError(f"block specs: no output block at level(s) {missing}; outputs must cover levels "
                         f"{min_level}..{max_level}")
