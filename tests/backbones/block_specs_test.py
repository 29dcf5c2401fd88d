"""Tests of spinenet_tf/backbones/block_specs.py (the tables and `validate_block_specs`) and of every ValueError a
user can meet when choosing a backbone: bad tables (validate_block_specs / plan_network), input size, model name,
overrides (spinenet_tf.build_backbone).

Expected tables: Model Garden's `SPINENET_BLOCK_SPECS` in `official/vision/modeling/backbones/spinenet.py`
(SpineNet: 16 rows, outputs at levels 4, 3, 5, 7, 6 and Model Garden's extra level-2 output block) and in
`official/vision/modeling/backbones/spinenet_mobile.py` (SpineNet-Mobile: 16 mbconv rows, 5 outputs); the oracle
test compares them with Model Garden's own lists.
"""

import pytest

import oracle
import spinenet_tf
from spinenet_tf import registry
from spinenet_tf.backbones import (SPINENET_BLOCK_SPECS, SPINENET_MOBILE_BLOCK_SPECS, BlockSpec, SpineNet,
                                   SpineNetMobile, plan_network, validate_block_specs)
from spinenet_tf.backbones.block_specs import parse_block_specs

TABLES = {"spinenet": (SPINENET_BLOCK_SPECS, (2, 2)), "spinenet_mobile": (SPINENET_MOBILE_BLOCK_SPECS, (1, 2))}


def _rows(specs):
    return [spec.to_list() for spec in specs]


def _plan(specs, min_level=3, max_level=7):
    stem = [(2, "bottleneck"), (2, "bottleneck")]
    return plan_network(parse_block_specs(specs), stem, lambda level, fn: 64 * (4 if fn == "bottleneck" else 1),
                        min_level, max_level)


# --- the tables --------------------------------------------------------------------------------------------------

def test_spinenet_table():
    assert len(SPINENET_BLOCK_SPECS) == 16
    outputs = [spec.level for spec in SPINENET_BLOCK_SPECS if spec.is_output]
    assert outputs == [4, 3, 5, 7, 6, 2]  # rows 11-16 of Model Garden's spinenet.py table; the last is its L2 block
    assert SPINENET_BLOCK_SPECS[-1] == BlockSpec(2, "bottleneck", (2, 13), True)
    assert {spec.block_fn for spec in SPINENET_BLOCK_SPECS} == {"bottleneck", "residual"}
    assert [spec.block_fn for spec in SPINENET_BLOCK_SPECS].count("residual") == 4  # rows 2, 5, 7, 8
    validate_block_specs(SPINENET_BLOCK_SPECS, 3, 7)
    validate_block_specs(SPINENET_BLOCK_SPECS, 2, 7)  # the L2 output block makes min_level=2 possible


def test_spinenet_mobile_table():
    assert len(SPINENET_MOBILE_BLOCK_SPECS) == 16
    assert [spec.level for spec in SPINENET_MOBILE_BLOCK_SPECS if spec.is_output] == [4, 3, 5, 7, 6]
    assert all(spec.block_fn == "mbconv" for spec in SPINENET_MOBILE_BLOCK_SPECS)
    assert SPINENET_MOBILE_BLOCK_SPECS[0] == BlockSpec(2, "mbconv", (0, 1), False)
    assert SPINENET_MOBILE_BLOCK_SPECS[-1] == BlockSpec(6, "mbconv", (13, 15), True)
    validate_block_specs(SPINENET_MOBILE_BLOCK_SPECS, 3, 7, stem_levels=(1, 2))


@pytest.mark.oracle
def test_tables_equal_model_garden():
    for ours, theirs in [(SPINENET_BLOCK_SPECS, oracle.spinenet.SPINENET_BLOCK_SPECS),
                         (SPINENET_MOBILE_BLOCK_SPECS, oracle.spinenet_mobile.SPINENET_BLOCK_SPECS)]:
        assert [(s.level, s.block_fn, tuple(s.input_offsets), s.is_output) for s in ours] == [
            (level, fn, tuple(offsets), bool(out)) for level, fn, offsets, out in theirs]


@pytest.mark.parametrize("row", [
    BlockSpec(3, "residual", (0, 1), True),
    [3, "residual", [0, 1], True],                     # as get_config writes it
    (3, "residual", (0, 1), 1),
    {"level": 3, "block_fn": "residual", "input_offsets": [0, 1], "is_output": True},
])
def test_block_spec_parsing(row):
    spec = BlockSpec.from_list(row)
    assert spec == BlockSpec(3, "residual", (0, 1), True)
    assert BlockSpec.from_list(spec.to_list()) == spec
    assert isinstance(spec.input_offsets, tuple)


def test_block_spec_with_wrong_arity_raises():
    with pytest.raises(ValueError, match=r"expected \(level, block_fn, \(input0, input1\), is_output\)"):
        BlockSpec.from_list([3, "residual", (0, 1)])


# --- validate_block_specs: one rule each -------------------------------------------------------------------------

def _table(**changes):
    """The SpineNet table with rows replaced: {row_index: BlockSpec}."""
    rows = list(SPINENET_BLOCK_SPECS)
    for row, spec in changes.items():
        rows[int(row[1:])] = spec
    return rows


@pytest.mark.parametrize("rows, match", [
    # Offsets index [stem0, stem1, block2, ...]; row 0 is block 2, so it may only read 0 and 1.
    (_table(r0=BlockSpec(2, "bottleneck", (0, 2), False)),
     r"block 2 \(row 0\): input offset 2 is not an earlier block \(must be in \[0, 2\)\)"),
    (_table(r5=BlockSpec(4, "bottleneck", (3, 9), False)),
     r"block 7 \(row 5\): input offset 9 is not an earlier block"),
    (_table(r3=BlockSpec(4, "bottleneck", (-1, 4), False)), r"block 5 \(row 3\): input offset -1 is not an earlier"),
    (_table(r4=BlockSpec(8, "residual", (3, 5), False)), r"block 6 \(row 4\): level 8 is outside \[2, 7\]"),
    (_table(r1=BlockSpec(1, "residual", (0, 1), False)), r"block 3 \(row 1\): level 1 is outside \[2, 7\]"),
    (_table(r2=BlockSpec(3, "conv", (2, 3), False)),
     r"block 4 \(row 2\): block_fn 'conv' is not one of residual, bottleneck, mbconv"),
    (_table(r2=BlockSpec(3, "bottleneck", (2, 3, 1), False)), r"block 4 \(row 2\): needs one or two input offsets"),
    (_table(r14=BlockSpec(6, "bottleneck", (12, 14), False)),
     r"no output block at level\(s\) \[6\]; outputs must cover levels 3\.\.7"),
])
def test_validate_block_specs_names_block_and_rule(rows, match):
    with pytest.raises(ValueError, match=match):
        validate_block_specs(rows, 3, 7)
    with pytest.raises(ValueError, match=match):  # the constructor reports the same, before building anything
        SpineNet(input_shape=(128, 128, 3), block_specs=rows)


def test_outputs_must_cover_min_level():
    # The table has no level-1 output, so min_level=1 is impossible.
    with pytest.raises(ValueError, match=r"no output block at level\(s\) \[1\]; outputs must cover levels 1\.\.7"):
        validate_block_specs(SPINENET_BLOCK_SPECS, 1, 7, stem_levels=(1, 2))
    with pytest.raises(ValueError, match=r"min_level=5, max_level=4: need 1 <= min_level <= max_level"):
        validate_block_specs(SPINENET_BLOCK_SPECS, 5, 4)


def test_mobile_levels_range_from_the_level_1_stem():
    rows = list(SPINENET_MOBILE_BLOCK_SPECS)
    rows[0] = BlockSpec(0, "mbconv", (0, 1), False)
    with pytest.raises(ValueError, match=r"block 2 \(row 0\): level 0 is outside \[1, 7\]"):
        SpineNetMobile(input_shape=(128, 128, 3), block_specs=rows)


def test_duplicate_output_level_is_raised_by_plan_network():
    rows = _table(r15=BlockSpec(3, "bottleneck", (2, 13), True))  # block 17 becomes a second L3 output
    validate_block_specs(rows, 3, 7)  # every per-row rule holds ...
    with pytest.raises(ValueError, match=r"block 17 \(row 15\): level 3 already has output block 13"):
        _plan(rows)  # ... but two blocks claim P3
    with pytest.raises(ValueError, match=r"block 17 \(row 15\): level 3 already has output block 13"):
        SpineNet(input_shape=(128, 128, 3), block_specs=rows)


# --- constructor and build_backbone errors -----------------------------------------------------------------------

@pytest.mark.parametrize("input_shape, match", [
    ((100, 128, 3), r"input height 100 is not divisible by 128 \(2\*\*max_level, max_level=7\)"),
    ((128, 192, 3), r"input width 192 is not divisible by 128"),
    ((128, 128, 1), r"expected \(H, W, 3\)"),
])
def test_input_size_must_be_divisible_by_2_to_the_max_level(input_shape, match):
    with pytest.raises(ValueError, match=match):
        SpineNet(input_shape=input_shape)
    with pytest.raises(ValueError, match=match):
        spinenet_tf.build_backbone("spinenet-mobile-49xs", input_shape=input_shape)


def test_input_size_rule_follows_max_level():
    # With max_level=6 the divisor is 2**6 = 64 (and the valid 4-row table below is never reached).
    with pytest.raises(ValueError, match=r"not divisible by 64 \(2\*\*max_level, max_level=6\)"):
        SpineNet(input_shape=(96, 128, 3), max_level=6, block_specs=[
            (3, "bottleneck", (0, 1), True), (4, "bottleneck", (0, 2), True), (5, "residual", (2, 3), True),
            (6, "residual", (3, 4), True)])


@pytest.mark.parametrize("kwargs, match", [
    (dict(block_repeats=0), r"block_repeats=0: must be >= 1"),
    (dict(filter_size_scale=0.0), r"filter_size_scale=0.0: must be > 0"),
    (dict(stochastic_depth_rate=1.0), r"stochastic_depth_rate=1.0: must be in \[0, 1\)"),
    (dict(activation="gelu"), r"activation 'gelu' is not one of relu, swish, hard_swish"),
])
def test_constructor_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spinenet_tf.build_backbone("spinenet-49s", input_shape=(128, 128, 3), **kwargs)


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown backbone 'spinenet-50'; valid names: ") as error:
        spinenet_tf.build_backbone("spinenet-50")
    for name in registry.BACKBONES:
        assert name in str(error.value)
    assert spinenet_tf.list_models() == list(registry.BACKBONES)
    with pytest.raises(ValueError, match=r"unknown model kind 'widget'; valid names: backbone"):
        spinenet_tf.list_models("widget")


@pytest.mark.parametrize("name, override", [
    ("spinenet-49", "resample_alpah"),       # a typo
    ("spinenet-49", "se_ratio"),             # a mobile-only argument on the regular family
    ("spinenet-mobile-49", "resample_alpha"),  # and the other way round
])
def test_unknown_override_is_named_with_the_allowed_ones(name, override):
    family = registry.BACKBONES[name].family
    with pytest.raises(ValueError, match=rf"{name}: unknown override\(s\) {override}; allowed: ") as error:
        spinenet_tf.build_backbone(name, input_shape=(128, 128, 3), **{override: 0.5})
    for allowed in registry.BACKBONE_OVERRIDES[family]:
        assert allowed in str(error.value)


# --- R0-SP53 (paper §3.3, Table 1, Fig. 4(c)) ---------------------------------------------------------------------

def test_r0_sp53_table_fits_the_paper():
    from spinenet_tf.backbones import R0_SP53_BLOCK_SPECS
    table = R0_SP53_BLOCK_SPECS
    assert len(table) == 15 and all(spec.block_fn == "bottleneck" for spec in table)
    # Table 1: scale-permuted {L2 1, L3 4, L4 6, L5 2, L6 1, L7 1} on the stem {2, 0, 0, 0}, i.e. ResNet-50's
    # {3, 4, 6, 3} blocks with one L5 block traded for an L6 and an L7 block.
    counts = {level: sum(spec.level == level for spec in table) for level in range(2, 8)}
    assert counts == {2: 1, 3: 4, 4: 6, 5: 2, 6: 1, 7: 1}
    # §3.1: intermediate and output blocks are permuted separately, the 5 outputs (L3..L7) last.
    assert [spec.is_output for spec in table] == [False] * 10 + [True] * 5
    assert sorted(spec.level for spec in table[10:]) == [3, 4, 5, 6, 7]
    # §5.1: an intermediate block's parents are among the last 5 blocks built (block 9 reads block 4, at the edge).
    for row, spec in enumerate(table[:10]):
        assert all(index - 5 <= parent < index for index in [row + 2] for parent in spec.input_offsets), row
    validate_block_specs(table, 3, 7)
    # Block 11 (L4) feeds no later block: the fusion rule sums it into the L4 output block 13, nothing is pruned.
    plan = _plan(table)
    assert {node.index: node.extra_inputs for node in plan if node.extra_inputs} == {13: (11,)}
    assert all(node.used for node in plan)


# --- stems ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("counts, levels", [
    ((2, 0, 0, 0), (2, 2)),                        # SpineNet, R0-SP53 (Model Garden's two level-2 blocks)
    ((2,), (2, 2)),                                # missing levels are 0
    ((1, 1, 1, 1), (2, 3, 4, 5)),                  # R14-SP39
    ((2, 3, 5, 1), (2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 5)),  # R35-SP18
    ((3, 4, 6, 3), (2,) * 3 + (3,) * 4 + (4,) * 6 + (5,) * 3),  # ResNet-50
])
def test_stem_block_levels(counts, levels):
    from spinenet_tf.backbones import stem_block_levels
    assert stem_block_levels(counts) == levels


@pytest.mark.parametrize("counts, match", [
    ((0, 1, 0, 0), r"the stem needs at least one L2 block"),
    ((2, 0, 1, 0), r"levels must be contiguous from L2"),
    ((1, 1, 1, 1, 1), r"expected up to 4 block counts >= 0 for levels L2, L3, L4, L5"),
    ((), r"expected up to 4 block counts"),
    ((2, -1), r"expected up to 4 block counts >= 0"),
    ((1.5,), r"expected up to 4 block counts >= 0"),
])
def test_bad_stems_are_named(counts, match):
    from spinenet_tf.backbones import stem_block_levels
    with pytest.raises(ValueError, match=rf"stem_blocks_per_level=.*: {match}"):
        stem_block_levels(counts)
    with pytest.raises(ValueError, match=match):
        SpineNet(input_shape=(128, 128, 3), stem_blocks_per_level=counts)


def test_offsets_count_every_stem_block_first():
    # With a 7-block stem (R23-SP30's {2, 2, 2, 1}) row 0 is block 7: it may read blocks 0..6, not 7.
    stem = (2, 2, 3, 3, 4, 4, 5)
    rows = [BlockSpec(3, "bottleneck", (6, 5), True), BlockSpec(4, "bottleneck", (0, 7), True),
            BlockSpec(5, "bottleneck", (7, 8), True), BlockSpec(7, "bottleneck", (8, 9), True),
            BlockSpec(6, "bottleneck", (9, 10), True)]
    validate_block_specs(rows, 3, 7, stem_levels=stem)
    bad = [BlockSpec(3, "bottleneck", (6, 7), True)] + rows[1:]
    with pytest.raises(ValueError, match=r"block 7 \(row 0\): input offset 7 is not an earlier block \(must be in "
                                         r"\[0, 7\)\)"):
        validate_block_specs(bad, 3, 7, stem_levels=stem)


def test_one_input_rows_are_valid():
    # The connection-ablation tables (paper §5.5): one parent per block.
    rows = [BlockSpec(spec.level, spec.block_fn, spec.input_offsets[:1], spec.is_output)
            for spec in SPINENET_BLOCK_SPECS]
    validate_block_specs(rows, 3, 7)
    with pytest.raises(ValueError, match=r"block 2 \(row 0\): needs one or two input offsets, got \(\)"):
        validate_block_specs([BlockSpec(2, "bottleneck", (), False)] + rows[1:], 3, 7)
