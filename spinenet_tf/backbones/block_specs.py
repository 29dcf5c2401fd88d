"""The block-spec tables of the scale-permuted networks found by NAS, and their checks.

SpineNet: Du et al., "SpineNet: Learning Scale-Permuted Backbone for Recognition and Localization", CVPR 2020
(arXiv:1912.05027). SpineNet-Mobile: Du et al., "Efficient Scale-Permuted Backbone with Learned Resource
Distribution", ECCV 2020 (arXiv:2010.11426). The tables are Model Garden's `SPINENET_BLOCK_SPECS`
(`official/vision/modeling/backbones/spinenet.py`) and `SPINENET_MOBILE_BLOCK_SPECS` (`spinenet_mobile.py`),
kept row for row so that Model Garden checkpoints map onto our layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

BLOCK_FNS = ("residual", "bottleneck", "mbconv")


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block of a scale-permuted network.

    Attributes:
        level: Feature level L; the block's output has stride 2**L.
        block_fn: "residual", "bottleneck" or "mbconv".
        input_offsets: Indices of the two parent blocks in the list [stem0, stem1, block2, ...]; both earlier.
        is_output: Whether the block feeds the endpoint P_level.
    """

    level: int
    block_fn: str
    input_offsets: tuple[int, int]
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


def parse_block_specs(specs: Iterable) -> tuple[BlockSpec, ...]:
    """Accepts BlockSpecs, 4-item rows or dicts (as written by `get_config`) and returns BlockSpecs."""
    return tuple(BlockSpec.from_list(row) for row in specs)


def validate_block_specs(specs: Sequence[BlockSpec], min_level: int, max_level: int,
                         stem_levels: tuple[int, int] = (2, 2)) -> None:
    """Raises ValueError naming the block and the rule it breaks.

    Rules: each block_fn is known; each level lies between the lowest stem level and max_level (blocks below
    min_level are allowed, they just feed no endpoint); both input offsets name earlier blocks; the output
    blocks cover every level in [min_level, max_level].
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
        if len(spec.input_offsets) != 2:
            raise ValueError(f"{where}: needs exactly two input offsets, got {spec.input_offsets}")
        for offset in spec.input_offsets:
            if not 0 <= offset < index:
                raise ValueError(f"{where}: input offset {offset} is not an earlier block (must be in [0, {index}))")
    covered = {spec.level for spec in specs if spec.is_output}
    missing = [level for level in range(min_level, max_level + 1) if level not in covered]
    if missing:
        raise ValueError(f"block specs: no output block at level(s) {missing}; outputs must cover levels "
                         f"{min_level}..{max_level}")
