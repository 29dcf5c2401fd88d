"""spinenet_tf.search.ablation: the SpineNet paper's connection damages (arXiv:1912.05027 §5.5, Table 9).

On R0-SP53's table, as the paper does: (1) every block loses its short-range input, (2) its long-range input, (3)
both, and reads the block built just before it instead; "in all three cases, one block only connects to one other
block". Each damaged table validates, builds as a backbone and runs, is no longer a point of the R0-SP53 space (§3.1
gives every block two inputs), and costs less (one resampling per block instead of two).
"""

import numpy as np
import pytest

from spinenet_tf.backbones import R0_SP53_BLOCK_SPECS, SPINENET_BLOCK_SPECS, SpineNet, validate_block_specs
from spinenet_tf.search import get_space
from spinenet_tf.search.ablation import ABLATIONS, remove_long_range, remove_short_range, sequential

TINY = {"filter_size_scale": 0.125, "endpoints_num_filters": 8}


def test_the_three_damages_in_the_papers_order():
    assert list(ABLATIONS) == ["remove_short_range", "remove_long_range", "sequential"]


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_every_block_keeps_one_input(name):
    damaged = ABLATIONS[name](R0_SP53_BLOCK_SPECS)
    assert len(damaged) == len(R0_SP53_BLOCK_SPECS)
    validate_block_specs(damaged, 3, 7)
    for row, (before, after) in enumerate(zip(R0_SP53_BLOCK_SPECS, damaged)):
        # Only the connections change: the permutation (levels, block types, output blocks) is R0-SP53's.
        assert (after.level, after.block_fn, after.is_output) == (before.level, before.block_fn, before.is_output)
        index = row + 2
        [parent] = after.input_offsets
        short, long = max(before.input_offsets), min(before.input_offsets)  # range = distance in build order
        assert parent == {"remove_short_range": long, "remove_long_range": short, "sequential": index - 1}[name]


def test_rows_that_read_far_back_change_the_most():
    # Block 9 reads blocks 4 and 8; output block 15 (L7) reads blocks 6 and 9 (paper §5.2: output blocks prefer
    # longer-range connections).
    rows = {name: (damage(R0_SP53_BLOCK_SPECS)[7].input_offsets, damage(R0_SP53_BLOCK_SPECS)[13].input_offsets)
            for name, damage in ABLATIONS.items()}
    assert rows == {"remove_short_range": ((4,), (6,)), "remove_long_range": ((8,), (9,)),
                    "sequential": ((8,), (14,))}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_damaged_tables_are_outside_the_search_space(name):
    with pytest.raises(ValueError, match=r"r0-sp53: row 0 \(block 2\): inputs \(\d+,\) are not two distinct blocks"):
        get_space("r0-sp53").encode(ABLATIONS[name](R0_SP53_BLOCK_SPECS))


def test_sequential_counts_the_stem():
    # With R23-SP30's 7-block stem row 0 reads the last stem block, 6; with SpineNet's 2 blocks, block 1.
    assert sequential(R0_SP53_BLOCK_SPECS, num_stem=7)[0].input_offsets == (6,)
    assert [spec.input_offsets for spec in sequential(SPINENET_BLOCK_SPECS)[:3]] == [(1,), (2,), (3,)]


def test_fusion_and_pruning_follow_the_damage():
    # The wiring rules stay plan_network's: an output block sums the blocks nothing reads any more, and a block that
    # then feeds no endpoint is not built.
    original = SpineNet.network_plan(R0_SP53_BLOCK_SPECS)
    long_removed = SpineNet.network_plan(remove_long_range(R0_SP53_BLOCK_SPECS))
    assert all(node.used for node in original)
    # Block 2 (L2) was read by blocks 4 and 5, whose short-range inputs are blocks 3 and 4: nothing reads it now.
    assert [node.index for node in long_removed if not node.used] == [2]
    chained = SpineNet.network_plan(sequential(R0_SP53_BLOCK_SPECS))
    assert all(node.used for node in chained)
    assert all(not node.extra_inputs for node in chained)  # every block but the last is read by the next one


def test_damaged_backbones_build_run_and_cost_less():
    x = np.random.default_rng(0).normal(size=(1, 128, 128, 3)).astype("float32")
    original = SpineNet(input_shape=(128, 128, 3), block_specs=R0_SP53_BLOCK_SPECS, **TINY)
    for name, damage in ABLATIONS.items():
        backbone = SpineNet(input_shape=(128, 128, 3), block_specs=damage(R0_SP53_BLOCK_SPECS), **TINY)
        features = backbone(x, training=False)
        assert {level: tuple(p.shape) for level, p in features.items()} == {
            level: (1, 128 >> level, 128 >> level, 8) for level in range(3, 8)}, name
        assert all(np.isfinite(np.asarray(p)).all() for p in features.values()), name
        assert not any(layer.name.endswith("resample1") for layer in backbone.layers), name
        assert backbone.count_params() < original.count_params(), name
