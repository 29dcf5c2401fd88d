"""spinenet_tf.search.spaces: the SpineNet paper's search spaces (arXiv:1912.05027 §3.1, §3.3, §5.1) in PyGlove.

- The published tables are points of their spaces: SpineNet-49's and R0-SP53's of "spinenet" (SpineNet-49 was
  searched from R0-SP53's block allocation with block adjustments, §3.4), R0-SP53's of "r0-sp53", SpineNet-Mobile-49's
  of "spinenet-mobile"; `encode` then `materialize` gives the table back.
- Random points of every space are valid tables that keep the space's rules (allocation, output blocks last, two
  distinct parents, the last-5-blocks window of §5.1), and a few of them build as tiny backbones and run.
- The sizes of the space's parts are the paper's §3.1 formulas; the R[N]-SP[M] allocations are Table 1's.
"""

import collections
import math
import random

import numpy as np
import pyglove as pg
import pytest

from spinenet_tf.backbones import (R0_SP53_BLOCK_SPECS, SPINENET_BLOCK_SPECS, SPINENET_MOBILE_BLOCK_SPECS,
                                   BlockSpec, SpineNet)
from spinenet_tf.search import SPACES, Architecture, get_space
from spinenet_tf.search.spaces import R_SP_FAMILY

# Model Garden's SpineNet-49 table has 16 rows; the last is an L2 output block (block 17) that feeds no endpoint at
# min_level 3 and is not built. The paper's SpineNet-49 has 15 blocks (Table 1: {1, 2, 4, 4, 2, 2} at L2..L7).
SPINENET_49 = SPINENET_BLOCK_SPECS[:15]

# Random points per space in the fast test (PyGlove spends ~50-100 ms on one point of the biggest spaces) and in
# the slow one (6 spaces x 170: 1,020 tables, ~2 CPU-minutes; 1,260 with the fast test).
FAST_SAMPLES = 40
SLOW_SAMPLES = 170


def test_spinenet_49_drops_only_an_unbuilt_block():
    assert SPINENET_BLOCK_SPECS[15] == BlockSpec(2, "bottleneck", (2, 13), True)
    full, searched = SpineNet.network_plan(SPINENET_BLOCK_SPECS), SpineNet.network_plan(SPINENET_49)
    assert not full[17].used
    assert [node for node in full if node.used] == [node for node in searched if node.used]


@pytest.mark.parametrize("space_name, table", [
    ("spinenet", SPINENET_49),
    ("spinenet", R0_SP53_BLOCK_SPECS),  # every adjustment 0, every block a bottleneck
    ("r0-sp53", R0_SP53_BLOCK_SPECS),
    ("spinenet-mobile", SPINENET_MOBILE_BLOCK_SPECS),
])
def test_published_tables_are_points_of_their_spaces(space_name, table):
    space = get_space(space_name)
    spec = space.dna_spec()  # ~1 s of PyGlove for the biggest spaces: built once
    dna = space.encode(table)
    dna.use_spec(spec)  # a complete point of the DNA spec PyGlove's algorithms search
    assert space.materialize(dna).block_specs == tuple(table)
    # The same point through PyGlove's own decoding of the hyper value, and through its numbers.
    assert space.architecture(pg.materialize(space.hyper_value(), dna)).block_specs == tuple(table)
    numbers = dna.to_numbers()
    assert space.materialize(pg.DNA.from_numbers(numbers, spec)).block_specs == tuple(table)


def test_spinenet_49_adjusts_r0_sp53s_allocation():
    # §3.4: SpineNet-49 adds level and block-type adjustments to the R0-SP53 search; its decisions show them.
    space = get_space("spinenet")
    decisions = pg.materialize(space.hyper_value(), space.encode(SPINENET_49))
    assert sorted(decisions["level_offsets"]) != [0] * 10
    assert set(decisions["block_fns"]) == {"bottleneck", "residual"}
    r0 = pg.materialize(space.hyper_value(), space.encode(R0_SP53_BLOCK_SPECS))
    assert list(r0["level_offsets"]) == [0] * 10 and set(r0["block_fns"]) == {"bottleneck"}


@pytest.mark.parametrize("space_name, table, match", [
    # SpineNet-49 has residual blocks and adjusted levels; the R0-SP53 space has neither.
    ("r0-sp53", SPINENET_49, r"r0-sp53: row 1 \(block 3\): block_fn 'residual' is not one of bottleneck"),
    ("spinenet", SPINENET_BLOCK_SPECS, r"spinenet: 16 rows, the space has 15 \(10 intermediate \+ 5 output blocks\)"),
    # Row 9 (block 11) reads block 5: outside the last 5 blocks built (§5.1).
    ("r0-sp53", R0_SP53_BLOCK_SPECS[:9] + (BlockSpec(4, "bottleneck", (5, 10), False),) + R0_SP53_BLOCK_SPECS[10:],
     r"row 9 \(block 11\): inputs \(5, 10\) are not two distinct blocks in \[6, 11\)"),
    # An L5 block moved to L6 without adjustments.
    ("r0-sp53", R0_SP53_BLOCK_SPECS[:6] + (BlockSpec(6, "bottleneck", (4, 7), False),) + R0_SP53_BLOCK_SPECS[7:],
     r"r0-sp53: intermediate levels \[2, 3, 3, 4, 4, 3, 6, 4, 4, 4\] cannot come from the allocation"),
    # The L3 output block moved to L4: two L4 outputs, none at L3.
    ("r0-sp53", R0_SP53_BLOCK_SPECS[:10] + (BlockSpec(4, "bottleneck", (4, 10), True),) + R0_SP53_BLOCK_SPECS[11:],
     r"output levels \[4, 4, 5, 7, 6\] are not an order of \(3, 4, 5, 6, 7\)"),
])
def test_tables_outside_a_space_are_named(space_name, table, match):
    with pytest.raises(ValueError, match=match):
        get_space(space_name).encode(table)


def _check_point(space, table):
    """The space's rules, checked on a table (independently of how `architecture` builds it)."""
    num_intermediate = len(space.intermediate_levels)
    assert [spec.is_output for spec in table] == [False] * num_intermediate + [True] * len(space.output_levels)
    assert sorted(spec.level for spec in table[num_intermediate:]) == [3, 4, 5, 6, 7]
    assert all(spec.block_fn in space.block_fns for spec in table)
    for row, spec in enumerate(table):
        index = space.num_stem + row
        first = index - 5 if row < num_intermediate else 0  # §5.1: intermediate blocks read the last 5 built
        assert len(set(spec.input_offsets)) == 2 and all(max(first, 0) <= p < index for p in spec.input_offsets)
    if space.level_offsets == (0,):  # R[N]-SP[M]: the allocation permuted, nothing adjusted
        assert sorted(spec.level for spec in table[:num_intermediate]) == sorted(space.intermediate_levels)


def _sample(space_name, num, seed=0):
    space = get_space(space_name)
    points = list(space.sample(num, seed))
    for _, architecture in points:
        _check_point(space, architecture.block_specs)
    # Uniform sampling of spaces of 1e12+ points repeats no table.
    assert len({architecture.block_specs for _, architecture in points}) == num
    return space, points


@pytest.mark.parametrize("space_name", list(SPACES))
def test_random_points_are_valid_tables(space_name):
    space, points = _sample(space_name, FAST_SAMPLES)
    # `materialize` (which `sample` uses) decodes a DNA as PyGlove's own `pg.materialize` of the hyper value does.
    for dna, architecture in points[:3]:
        assert space.architecture(pg.materialize(space.hyper_value(), dna)) == architecture
    # Every point is reached again through `encode` (a few: encoding costs a PyGlove template per call). The DNA may
    # differ: blocks of one allocation level swap without changing the table.
    for _, architecture in points[:3]:
        assert space.materialize(space.encode(architecture.block_specs)) == architecture
    # The same seed draws the same points.
    assert [a for _, a in space.sample(3, seed=0)] == [a for _, a in points[:3]]


@pytest.mark.slow
@pytest.mark.parametrize("space_name", list(SPACES))
def test_thousands_of_random_points_are_valid_tables(space_name):
    _sample(space_name, SLOW_SAMPLES, seed=1)


@pytest.mark.parametrize("space_name", ["spinenet", "r23-sp30", "spinenet-mobile"])
def test_random_points_build_and_run(space_name, tmp_path):
    space = get_space(space_name)
    for _, architecture in space.sample(2, seed=3):
        tiny = {"filter_size_scale": 0.125, "endpoints_num_filters": 8}
        backbone = architecture.build((128, 128, 3), **tiny)
        features = backbone(np.random.default_rng(0).normal(size=(1, 128, 128, 3)).astype("float32"),
                            training=False)
        assert {level: tuple(p.shape) for level, p in features.items()} == {
            level: (1, 128 >> level, 128 >> level, 8) for level in range(3, 8)}
        assert all(np.isfinite(np.asarray(p)).all() for p in features.values())
        assert backbone.block_specs == architecture.block_specs
        if architecture.stem_blocks_per_level is not None:
            assert backbone.stem_blocks_per_level == architecture.stem_blocks_per_level


def test_architecture_json_round_trip():
    for space_name in ("r14-sp39", "spinenet-mobile"):
        [(_, architecture)] = get_space(space_name).sample(1, seed=0)
        data = architecture.to_json_dict()
        assert Architecture.from_json_dict(data) == architecture
    assert data["stem_blocks_per_level"] is None and data["family"] == "spinenet_mobile"


def test_space_sizes_are_the_papers_formulas():
    # §3.1 for SpineNet-49's search: N = 15 blocks, m = 2 stem blocks.
    n, m = 15, 2
    size = get_space("spinenet").size()
    assert size.orderings == math.factorial(n - 5) * math.factorial(5)
    assert size.connections_unrestricted == math.prod(math.comb(i, 2) for i in range(m, n + m))
    assert size.block_types == 2 ** n
    # 4^(N-5) adjustments, except that the one L2 block cannot move to L1 (below the stem): 3 * 4^9.
    assert size.level_adjustments == 3 * 4 ** (n - 6)
    # §5.1's window: an intermediate block at index i picks 2 of the min(i, 5) blocks before it; outputs any.
    window = math.prod(math.comb(min(i, 5), 2) for i in range(m, m + 10))
    assert size.connections == window * math.prod(math.comb(i, 2) for i in range(m + 10, m + n))
    assert size.total == size.orderings * size.connections * size.level_adjustments * size.block_types
    # Identical allocation levels swap without a change: 10! / (1! 3! 5! 1!) distinct level orders.
    assert size.distinct_level_orders == math.factorial(10) // (6 * 120) * math.factorial(5)
    # The R0-SP53 space searches orderings and connections only (§3.3).
    r0 = get_space("r0-sp53").size()
    assert (r0.level_adjustments, r0.block_types) == (1, 1)
    assert r0.total == size.orderings * size.connections


@pytest.mark.parametrize("name", list(R_SP_FAMILY))
def test_r_sp_spaces_allocate_resnet_50s_blocks(name):
    # Table 1 / §3.3: the stem and the scale-permuted blocks together are ResNet-50's {3, 4, 6, 3} bottlenecks with
    # one L5 block traded for an L6 and an L7 block; R[N]-SP[M] counts 3 layers per bottleneck plus 2 (the 7x7
    # conv and the head), so N + M = 3 * 17 + 2, and N = 3 * stem blocks + 2, M = 3 * permuted blocks. R0-SP53 is
    # the exception: its name counts the two L2 stem blocks (Table 1's stem column {2, 0, 0, 0}) in the 53.
    space = get_space(name)
    stem_levels = [level for level, _ in space.stem]
    permuted = list(space.intermediate_levels) + list(space.output_levels)
    counts = collections.Counter(stem_levels + permuted)
    assert [counts[level] for level in range(2, 8)] == [3, 4, 6, 2, 1, 1]
    stem_layers, permuted_layers = (int(part.lstrip("RSP")) for part in name.upper().split("-"))
    assert stem_layers + permuted_layers == 3 * 17 + 2
    if stem_layers:
        assert (3 * len(stem_levels) + 2, 3 * len(permuted)) == (stem_layers, permuted_layers)
    else:
        assert (len(stem_levels), 3 * (len(stem_levels) + len(permuted)) + 2) == (2, permuted_layers)


def test_unknown_space_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown search space 'r50'; valid names: spinenet, r35-sp18, .*"
                                         r"spinenet-mobile"):
        get_space("r50")


def test_random_dna_of_the_spec_is_what_sample_draws():
    # `sample` is PyGlove's uniform sampler on `dna_spec()`, nothing of ours.
    space = get_space("r35-sp18")
    [(dna, _)] = space.sample(1, seed=7)
    assert dna == pg.random_dna(space.dna_spec(), random.Random(7))
