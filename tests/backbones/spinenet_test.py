"""Tests of spinenet_tf/backbones/spinenet.py (SpineNet, SpineNetMobile, plan_network) through the registry.

Every registry name (never a hand-written list) is built once, at a non-square 256x128 input, by a module-scoped
fixture that frees it afterwards; the oracle tests share Model Garden's twin (tf-models-official 2.20.0) at
128x128. Parameter and weight counts do not depend on the input size. The other tests use small models: registry names
with shrinking overrides (filter_size_scale=0.25, endpoints_num_filters=16) at 128x128, which keeps them fast and
the public registry free of test-only models.

Golden numbers: Model Garden (the oracle, tests/oracle.py), cited where used. Structural facts of Model Garden's
network (`official/vision/modeling/backbones/spinenet.py`): stochastic depth rate init_rate * i / len(block_specs)
for the i-th scale-permuted block (1-based) and none on the stem; an output block also sums every earlier block of
its level and width that nothing consumed yet; blocks feeding no endpoint are pruned (block 17, Model Garden's
level-2 output).
"""

import gc

import keras
import numpy as np
import pytest

import oracle
import spinenet_tf
import testing
from spinenet_tf import registry
from spinenet_tf.backbones import BlockSpec, FeatureSpec, SpineNet, SpineNetMobile
from spinenet_tf.backbones.spinenet import block_name
from spinenet_tf.layers import StochasticDepth, normalization

# Trainable parameters in millions of Model Garden's SpineNet-49 / 96 / 143 / 190 (tf-models-official 2.20.0,
# `official/vision/modeling/backbones/spinenet.py` SCALING_MAP rows, built and counted). Every registry row is
# compared with the oracle built in the test; these pins also catch an oracle upgrade that changes the architecture.
MODEL_GARDEN_TRAINABLE_PARAMS_M = {"spinenet-49": 21.83, "spinenet-96": 36.26, "spinenet-143": 60.25,
                                   "spinenet-190": 126.59}

TINY = dict(filter_size_scale=0.25, endpoints_num_filters=16)  # shrinking overrides for the small tests

# A shortened valid SpineNet table: 5 blocks, outputs at levels 3, 4, 5, 7, 6 (offsets index [stem0, stem1, ...]).
CUSTOM_BLOCK_SPECS = [
    [3, "bottleneck", [0, 1], True],   # block 2
    [4, "residual", [0, 2], True],     # block 3
    [5, "bottleneck", [2, 3], True],   # block 4
    [7, "residual", [3, 4], True],     # block 5
    [6, "bottleneck", [4, 5], True],   # block 6
]


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _images(batch, height, width, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, height, width, 3)).astype("float32")


def _num_params(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _tiny(name="spinenet-49", input_shape=(128, 128, 3), **overrides):
    return spinenet_tf.build_backbone(name, input_shape=input_shape, **{**TINY, **overrides})


@pytest.fixture(scope="module", params=testing.slow_unless(
    [name for name, row in registry.BACKBONES.items() if row.family != "resnet"]))
def registry_backbone(request):
    """(name, model) for every SpineNet registry name at 256x128 (96/143/143L/190 in `make test-slow`); one model
    alive at a time. (ResNet-50's tests are tests/backbones/resnet_test.py.)"""
    model = spinenet_tf.build_backbone(request.param, input_shape=(256, 128, 3))
    yield request.param, model
    del model
    keras.backend.clear_session()
    gc.collect()


# --- (a) parameter counts ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_garden_twin(registry_backbone):
    """Model Garden's backbone of the current `registry_backbone` row, at 128x128 (counts do not depend on the size)."""
    mg = oracle.backbone(registry_backbone[0])
    yield mg
    del mg
    oracle.clear_session()


# One test, so Model Garden's twin of a big variant (~20 s to build) is built once per run, not once per worker.
@pytest.mark.oracle
def test_parameter_counts_and_weight_shapes_match_model_garden(registry_backbone, model_garden_twin):
    name, model = registry_backbone
    mg = model_garden_twin
    expected = _num_params(mg.trainable_weights)
    if name in MODEL_GARDEN_TRAINABLE_PARAMS_M:  # the oracle itself, against its pinned counts
        assert round(expected / 1e6, 2) == MODEL_GARDEN_TRAINABLE_PARAMS_M[name]
    assert _num_params(model.trainable_weights) == expected
    # The registry row is Model Garden's SCALING_MAP row.
    assert registry.BACKBONES[name].kwargs() == oracle.backbone_row(name)[1]
    assert _num_params(model.non_trainable_weights) == _num_params(mg.non_trainable_weights)
    assert len(model.trainable_weights) == len(mg.trainable_weights)
    assert len(model.weights) == len(mg.weights)
    assert sorted(tuple(w.shape) for w in model.weights) == sorted(tuple(w.shape) for w in mg.weights)


# --- (b) outputs -------------------------------------------------------------------------------------------------

def test_outputs_levels_shapes_and_specs(registry_backbone):
    name, model = registry_backbone
    spec = registry.BACKBONES[name]
    assert type(model) is (SpineNetMobile if spec.family == "spinenet_mobile" else SpineNet)
    channels = spec.endpoints_num_filters
    levels = list(range(3, 8))
    height, width = 256, 128  # non-square; stride 2**7 = 128 divides both
    assert model.size_divisibility == 2 ** 7
    assert height % model.size_divisibility == 0 and width % model.size_divisibility == 0
    assert model.output_specs == {level: FeatureSpec(stride=2 ** level, channels=channels) for level in levels}
    # The symbolic graph and an eager call (batch 1 keeps SpineNet-190 at ~2 s on two cores).
    assert sorted(model.output) == levels and all(type(k) is int for k in model.output)
    outputs = model(_images(1, height, width), training=False)
    assert sorted(outputs) == levels and all(type(k) is int for k in outputs), list(outputs)
    for level, spec in model.output_specs.items():
        expected = (1, height // spec.stride, width // spec.stride, spec.channels)
        assert tuple(outputs[level].shape) == expected, f"P{level}"
        assert tuple(model.output[level].shape) == (None,) + expected[1:], f"symbolic P{level}"
        assert np.all(np.isfinite(_np(outputs[level])))


# --- small models shared by (c)-(f) -----------------------------------------------------------------------------

# Non-default settings everywhere, so that the round trip and the override tests see them.
NON_DEFAULTS = dict(activation="swish", stochastic_depth_rate=0.2, norm_momentum=0.9, norm_epsilon=1e-4)


@pytest.fixture(scope="module", params=["spinenet-49", "spinenet-mobile-49xs"])
def small_backbone(request):
    """(name, overrides, model): one regular and one mobile registry model, shrunk, with non-default settings."""
    overrides = {**TINY, **NON_DEFAULTS}
    model = spinenet_tf.build_backbone(request.param, input_shape=(128, 128, 3), **overrides)
    yield request.param, overrides, model
    del model
    keras.backend.clear_session()
    gc.collect()


# --- (c) .keras round trip ---------------------------------------------------------------------------------------

def test_keras_round_trip(small_backbone, tmp_path):
    name, overrides, model = small_backbone
    loaded = testing.assert_keras_round_trip(model, _images(2, 128, 128), tmp_path)
    config = loaded.get_config()
    for key, value in {**registry.BACKBONES[name].kwargs(), **overrides}.items():
        assert config[key] == value, key


def test_keras_round_trip_keeps_custom_block_specs(tmp_path):
    # Model Garden's SpineNet.get_config drops block_specs, so a reloaded custom network silently becomes
    # SpineNet-49; here the table must survive get_config and the .keras file.
    model = _tiny(block_specs=CUSTOM_BLOCK_SPECS)
    assert model.get_config()["block_specs"] == CUSTOM_BLOCK_SPECS
    loaded = testing.assert_keras_round_trip(model, _images(2, 128, 128), tmp_path)
    assert loaded.block_specs == tuple(BlockSpec.from_list(row) for row in CUSTOM_BLOCK_SPECS)
    assert loaded.get_config()["block_specs"] == CUSTOM_BLOCK_SPECS
    assert len(loaded.plan) == 2 + len(CUSTOM_BLOCK_SPECS)
    block_layers = {layer.name for layer in loaded.layers if layer.name.startswith("block")}
    assert "block02_l3_bottleneck" in block_layers and "block06_l6_bottleneck" in block_layers
    assert not any(layer_name.startswith("block07") for layer_name in block_layers)


def test_unknown_input_size_matches_fixed_input_size(small_backbone):
    # Built with (None, None, 3), the up-sampling takes its dynamic-shape path; same weights, same outputs.
    _, overrides, fixed = small_backbone
    dynamic = type(fixed).from_config({**fixed.get_config(), "input_shape": [None, None, 3]})
    dynamic.set_weights(fixed.get_weights())
    x = _images(1, 128, 128)
    expected, actual = fixed(x, training=False), dynamic(x, training=False)
    for level in range(3, 8):
        np.testing.assert_allclose(_np(actual[level]), _np(expected[level]), atol=1e-5, rtol=1e-5)
    wide = dynamic(_images(1, 128, 384), training=False)
    channels = overrides["endpoints_num_filters"]
    assert {level: tuple(p.shape) for level, p in wide.items()} == {
        level: (1, 128 >> level, 384 >> level, channels) for level in range(3, 8)}


# --- (d) overrides -----------------------------------------------------------------------------------------------

def _drop_path_rates(model):
    """{(block index, layer name): [StochasticDepth rates inside it]} for every built block layer of the plan."""
    rates = {}
    for node in model.plan:
        if not node.used:
            continue
        for repeat in range(model.block_repeats):
            name = block_name(node) + (f"_r{repeat + 1}" if repeat else "")
            rates[(node.index, name)] = [sub.rate for sub in testing.walk_layers(model.get_layer(name))
                                         if isinstance(sub, StochasticDepth)]
    return rates


def test_stochastic_depth_rates_follow_model_garden(small_backbone):
    _, overrides, model = small_backbone
    rate, num_blocks = overrides["stochastic_depth_rate"], len(model.block_specs)
    assert num_blocks == 16
    rates = _drop_path_rates(model)
    for (index, layer_name), found in rates.items():
        if index < 2:
            assert found == [], f"{layer_name}: the stem has no stochastic depth"
        else:
            # Block index k in [stem0, stem1, block2, ...] is scale-permuted block i = k - 1 (1-based).
            assert found == [pytest.approx(rate * (index - 1) / num_blocks)], layer_name
    # Every StochasticDepth layer of the model sits in one of those blocks.
    all_rates = [sub.rate for sub in testing.walk_layers(model) if isinstance(sub, StochasticDepth)]
    assert len(all_rates) == sum(len(found) for found in rates.values())
    assert len(all_rates) == model.block_repeats * sum(node.used for node in model.plan[2:])


def test_activation_and_norm_overrides_reach_every_layer(small_backbone):
    _, overrides, model = small_backbone
    layers = list(testing.walk_layers(model))
    activations = [layer for layer in layers if isinstance(layer, keras.layers.Activation)]
    assert activations and {layer.activation for layer in activations} == {normalization.swish}
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(bn.momentum == overrides["norm_momentum"] and bn.epsilon == overrides["norm_epsilon"]
                         for bn in norms)
    # The layers compute swish, x * sigmoid(x), not relu.
    x = np.linspace(-4, 4, 64, dtype="float32").reshape(1, 8, 8, 1)
    for layer in activations[:3] + activations[-3:]:
        np.testing.assert_allclose(_np(layer(x)), x / (1 + np.exp(-x)), rtol=1e-5, atol=1e-6)


def test_min_level_override_changes_the_endpoints():
    model = _tiny(min_level=4)
    outputs = model(_images(1, 128, 128), training=False)
    assert list(outputs) == [4, 5, 6, 7] and sorted(model.output_specs) == [4, 5, 6, 7]
    # Block 13 is the level-3 output and feeds only block 17 (Model Garden's SPINENET_BLOCK_SPECS in
    # `official/vision/modeling/backbones/spinenet.py`), so nothing needs it now.
    assert not any(layer.name.startswith("block13") for layer in model.layers)
    assert not model.plan[13].used


def test_min_level_2_uses_model_gardens_level_2_output_block():
    model = _tiny(min_level=2)
    outputs = model(_images(1, 128, 128), training=False)
    assert list(outputs) == [2, 3, 4, 5, 6, 7]
    assert tuple(outputs[2].shape) == (1, 32, 32, 16)
    assert model.plan[17].used and model.get_layer("block17_l2_bottleneck") is not None


# --- (e) plan_network --------------------------------------------------------------------------------------------

def test_blocks_feeding_no_endpoint_are_not_built(small_backbone):
    name, _, model = small_backbone
    unused = [node.index for node in model.plan if not node.used]
    if registry.BACKBONES[name].family == "spinenet":
        assert unused == [17]  # Model Garden's level-2 output block
        assert not any(layer.name.startswith("block17") for layer in model.layers)
    else:
        assert unused == []
    for node in model.plan[2:]:
        if node.used:
            assert model.get_layer(block_name(node)) is not None


def test_output_blocks_sum_unconsumed_blocks_of_their_level(small_backbone):
    # By Model Garden's fusion rule (`official/vision/modeling/backbones/spinenet.py`) the only such block is 11
    # (level 5; nothing reads it), summed into output block 14 (level 5); in the mobile table (`spinenet_mobile.py`)
    # it is block 12 (level 5), summed into output block 15.
    name, _, model = small_backbone
    index, extra = (14, 11) if registry.BACKBONES[name].family == "spinenet" else (15, 12)
    assert {node.index: node.extra_inputs for node in model.plan if node.extra_inputs} == {index: (extra,)}
    assert len(model.get_layer(f"block{index}_fuse").input) == 3
    assert len(model.get_layer(f"block{index - 1}_fuse").input) == 2


# --- (f) stochastic depth in training and inference --------------------------------------------------------------

def test_training_calls_are_stochastic_and_inference_calls_deterministic(small_backbone):
    _, _, model = small_backbone
    keras.utils.set_random_seed(0)
    x = _images(2, 128, 128)
    first, second = model(x, training=True), model(x, training=True)
    assert any(not np.allclose(_np(first[level]), _np(second[level])) for level in first)
    first, second = model(x, training=False), model(x, training=False)
    for level in first:
        np.testing.assert_array_equal(_np(first[level]), _np(second[level]))


# --- (g) the scale-decreased stem --------------------------------------------------------------------------------

# R23-SP30's stem (paper Table 1: {2, 2, 2, 1} at L2..L5, 7 blocks) under a 5-row table reading stem blocks 0, 5 and 6.
R23_STEM = (2, 2, 2, 1)
STEM_TABLE = [
    [3, "bottleneck", [5, 6], True],   # block 7
    [4, "residual", [0, 7], True],     # block 8
    [5, "bottleneck", [7, 8], True],   # block 9
    [7, "residual", [8, 9], True],     # block 10
    [6, "bottleneck", [9, 10], True],  # block 11
]


def test_default_stem_is_model_gardens():
    model = _tiny()
    assert model.stem_blocks_per_level == (2, 0, 0, 0) and model.stem == ((2, "bottleneck"), (2, "bottleneck"))
    assert model.get_config()["stem_blocks_per_level"] == [2, 0, 0, 0]
    assert [layer.name for layer in model.layers if layer.name.startswith("stem_block")] == ["stem_block0",
                                                                                             "stem_block1"]
    assert "stem_blocks_per_level" not in _tiny("spinenet-mobile-49xs").get_config()
    with pytest.raises(ValueError, match=r"stem_blocks_per_level=\(2, 0, 0, 0\): SpineNet-Mobile's stem is fixed"):
        SpineNetMobile(input_shape=(128, 128, 3), stem_blocks_per_level=(2, 0, 0, 0))


def test_resnet_stem_blocks_are_parents_with_stride_2_transitions(tmp_path):
    model = _tiny(stem_blocks_per_level=R23_STEM, block_specs=STEM_TABLE, stochastic_depth_rate=0.2)
    assert [node.level for node in model.plan[:7]] == [2, 2, 3, 3, 4, 4, 5]
    assert model.plan[7].inputs == (5, 6) and model.plan[8].inputs == (0, 7)
    # Each stem block's output has its level's stride and width (bottleneck: 4x the level's filters).
    x = keras.ops.zeros((1, 128, 128, 3))
    probe = keras.Model(model.input, [model.get_layer(f"stem_block{i}").output for i in range(7)])
    shapes = [tuple(y.shape) for y in probe(x)]
    width = {2: 64, 3: 128, 4: 256, 5: 256}
    assert shapes == [(1, 128 >> level, 128 >> level, int(width[level] * 0.25) * 4)
                      for level in (2, 2, 3, 3, 4, 4, 5)]
    # Stochastic depth: the stem has none; table row i (1-based) of 5 gets 0.2 * i / 5 (Model Garden's rule).
    rates = _drop_path_rates(model)
    for (index, layer_name), found in rates.items():
        assert found == ([] if index < 7 else [pytest.approx(0.2 * (index - 6) / 5)]), layer_name
    outputs = model(_images(1, 128, 128), training=False)
    assert {level: tuple(p.shape) for level, p in outputs.items()} == {
        level: (1, 128 >> level, 128 >> level, 16) for level in range(3, 8)}
    loaded = testing.assert_keras_round_trip(model, _images(1, 128, 128), tmp_path)
    assert loaded.stem_blocks_per_level == R23_STEM and loaded.get_config()["stem_blocks_per_level"] == [2, 2, 2, 1]


def test_stem_blocks_after_the_last_one_read_are_not_built():
    table = [list(row) for row in STEM_TABLE]
    table[0][2] = [1, 2]  # row 0 now reads stem blocks 1 and 2; nothing reads blocks 3..6
    model = _tiny(stem_blocks_per_level=R23_STEM, block_specs=table)
    assert [node.used for node in model.plan[:7]] == [True, True, True, False, False, False, False]
    assert [layer.name for layer in model.layers if layer.name.startswith("stem_block")] == [
        "stem_block0", "stem_block1", "stem_block2"]


def test_one_input_blocks_are_resampled_without_a_sum():
    table = [[level, fn, inputs[:1], out] for level, fn, inputs, out in CUSTOM_BLOCK_SPECS]
    model = _tiny(block_specs=table)
    names = {layer.name for layer in model.layers}
    assert "block03_resample0" in names and "block03_resample1" not in names and "block03_fuse" not in names
    outputs = model(_images(1, 128, 128), training=False)
    assert sorted(outputs) == [3, 4, 5, 6, 7]
