"""The SpineNet paper's connection ablation (arXiv:1912.05027 §5.5, "Importance of cross-scale connections",
Table 9) as functions from a block-spec table to a damaged table.

The paper damages every block of R0-SP53's scale-permuted network in three ways, after which "one block only
connects to one other block":

1. `remove_short_range`: drop the short-range connection; the block keeps its long-range parent.
2. `remove_long_range`: drop the long-range connection; the block keeps its short-range parent.
3. `sequential`: drop both, and connect the block to the block built just before it.

Range is distance in build order (§5.2 speaks of "adjacent" intermediate blocks forming a deep path and of output
blocks preferring "longer-range connections"): of a block's two parents the short-range one is the later built
(larger index), the long-range one the earlier. All three apply to every row, output blocks included. A damaged
row has one input offset (`BlockSpec` allows one for this); the network resamples that parent alone, with no sum.
The wiring rules stay those of `plan_network`: an output block still sums the earlier unconsumed blocks of its
level and width, and a block that then feeds no endpoint is not built (e.g. R0-SP53's L2 block 2 once its only
consumer reads its other parent).

    damaged = remove_long_range(R0_SP53_BLOCK_SPECS)
    backbone = spinenet_tf.build_backbone("r0-sp53", (640, 640, 3), block_specs=damaged)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from spinenet_tf.backbones.block_specs import BlockSpec, parse_block_specs


def _keep_one_parent(block_specs: Sequence, pick: Callable[[tuple[int, ...]], int]) -> tuple[BlockSpec, ...]:
    return tuple(BlockSpec(spec.level, spec.block_fn, (pick(spec.input_offsets),), spec.is_output)
                 for spec in parse_block_specs(block_specs))


def remove_short_range(block_specs: Sequence, num_stem: int = 2) -> tuple[BlockSpec, ...]:
    """Every block keeps only its long-range (earliest-built) parent. `num_stem` is unused (uniform signature)."""
    del num_stem
    return _keep_one_parent(block_specs, min)


def remove_long_range(block_specs: Sequence, num_stem: int = 2) -> tuple[BlockSpec, ...]:
    """Every block keeps only its short-range (latest-built) parent. `num_stem` is unused (uniform signature)."""
    del num_stem
    return _keep_one_parent(block_specs, max)


def sequential(block_specs: Sequence, num_stem: int = 2) -> tuple[BlockSpec, ...]:
    """Every block's one parent is the block built just before it (row r reads block num_stem + r - 1; the first
    row reads the last stem block).

    Args:
        block_specs: The table.
        num_stem: Stem blocks before row 0 (2 for SpineNet, SpineNet-Mobile and R0-SP53).
    """
    return tuple(BlockSpec(spec.level, spec.block_fn, (num_stem + row - 1,), spec.is_output)
                 for row, spec in enumerate(parse_block_specs(block_specs)))


# Name -> damage, in the paper's order (Table 9).
ABLATIONS: dict[str, Callable[..., tuple[BlockSpec, ...]]] = {
    "remove_short_range": remove_short_range,
    "remove_long_range": remove_long_range,
    "sequential": sequential,
}
