"""Tests of spinenet_tf/model_stats.py: parameter and FLOP (multiply-add) counts, total and per level.

Golden numbers are derived by hand (a 3x3 conv costs H * W * Cin * Cout * 9 multiply-adds) or come from the oracle:
Model Garden's backbones (tf-models-official 2.20.0, tests/oracle.py) counted by the TF profiler: the float ops of a
frozen concrete function, halved.
"""

import keras
import pytest
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

import oracle
import spinenet_tf
from spinenet_tf import model_stats


def _conv_model(h, w, cin, cout, batch_norm=False):
    inputs = keras.Input((h, w, cin))
    x = keras.layers.Conv2D(cout, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="stem_bn")(x)
    return keras.Model(inputs, x)


# --- hand-derived counts --------------------------------------------------------------------------------------

def test_one_3x3_conv_costs_h_w_cin_cout_9_multiply_adds():
    model = _conv_model(16, 8, 3, 5)
    assert model_stats.count_flops(model, (16, 8, 3)) == 16 * 8 * 3 * 5 * 9
    assert model_stats.count_flops(model, (16, 8, 3), batch=2) == 2 * 16 * 8 * 3 * 5 * 9
    assert model_stats.count_params(model) == 3 * 3 * 3 * 5


def test_batch_norm_costs_no_flops_and_its_statistics_are_not_params():
    # Keras 3 lowers inference BN to element-wise mul/add that the profiler counts; Model Garden's fused BN counts 0.
    model = _conv_model(16, 8, 3, 5, batch_norm=True)
    stats = model_stats.model_stats(model, (16, 8, 3))
    assert stats.flops == model_stats.count_flops(model, (16, 8, 3)) == 16 * 8 * 3 * 5 * 9
    assert stats.params == model_stats.count_params(model) == 3 * 3 * 3 * 5 + 2 * 5  # + gamma, beta
    assert set(stats.per_level) == {"stem"}


def test_flops_need_a_fully_defined_shape():
    with pytest.raises(ValueError, match="fully defined"):
        model_stats.count_flops(_conv_model(16, 8, 3, 5), (None, 8, 3))


@pytest.mark.parametrize("name, group", [
    ("stem_block1/expand_conv/kernel", "stem"),
    ("spinenet_49_1/stem_conv_1/convolution", "stem"),
    ("block07_l5_residual/conv1/kernel", "L5"),
    ("spinenet_96_1/block07_l5_residual_r2_1/conv2_1/convolution", "L5"),
    ("block07_resample1/out_conv/kernel", "L5"),        # a block's resampling and fusion count at its level
    ("net_1/block07_fuse_1/add", "L5"),
    ("block09_resample0/out_conv/kernel", "other"),     # block 9's level is unknown here
    ("endpoint_l3_conv/kernel", "P3"),
    ("retinanet_1/spinenet_49_1/endpoint_l7_bn_1/x", "P7"),  # a backbone nested in a detector
    ("retinanet_1/retinanet_head_1/class_l3_conv/x", "head"),
    ("head/conv0/kernel", "head"),
    ("retinanet_1/anchors/Mul", "other"),
    ("overhead/Mul", "other"),
])
def test_group_of_reads_structural_names(name, group):
    assert model_stats.group_of(name, {7: 5}) == group


def test_per_level_breakdown_of_mobile_49xs():
    model = spinenet_tf.build_backbone("spinenet-mobile-49xs", input_shape=(128, 128, 3))
    stats = model_stats.model_stats(model, (128, 128, 3))
    assert list(stats.per_level) == ["stem", "L2", "L3", "L4", "L5", "L6", "L7", "P3", "P4", "P5", "P6", "P7"]
    assert sum(s.params for s in stats.per_level.values()) == stats.params == model_stats.count_params(model)
    assert sum(s.flops for s in stats.per_level.values()) == stats.flops
    # P3 = 1x1 conv from the level-3 block (int(40 * 0.6) = 24 channels) to 24 endpoint filters on a 16x16 map,
    # + BN gamma/beta (49XS widths and endpoints_num_filters 24: FILTER_SIZE_MAP and SCALING_MAP in Model Garden's
    # `official/vision/modeling/backbones/spinenet_mobile.py`).
    assert stats.per_level["P3"] == model_stats.GroupStats(params=24 * 24 + 2 * 24, flops=16 * 16 * 24 * 24)
    assert "other" not in stats.per_level  # every weight and costly op has a structural name
    assert stats.to_json_dict()["per_level"]["P3"] == {"params": 624, "flops": 147456}


# --- against the oracle ---------------------------------------------------------------------------------------

def _calc_flops(model, size):
    """TF-profiler float ops of the frozen concrete function at batch 1, halved."""
    concrete = tf.function(model).get_concrete_function(tf.TensorSpec([1, size, size, 3], tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops / 2


@pytest.mark.oracle
@pytest.mark.parametrize("name, size", [
    # Mobile-49 at its paper resolution (384, SpineNet-Mobile paper arXiv:2010.11426); depthwise resampling, SE,
    # nearest up-sampling.
    ("spinenet-mobile-49", 384),
    # SpineNet-49S, small input to keep the test quick; alpha resampling, max-pool down-sampling.
    ("spinenet-49s", 128),
])
def test_counts_match_model_garden(name, size):
    theirs = oracle.backbone(name, size)
    oracle_flops = _calc_flops(theirs, size)
    # The library also counts tf_keras models; unfrozen it gives the frozen profiler number.
    assert model_stats.count_flops(theirs, (size, size, 3)) == pytest.approx(oracle_flops, abs=1)

    ours = spinenet_tf.build_backbone(name, input_shape=(size, size, 3))
    assert model_stats.count_params(ours) == model_stats.count_params(theirs)
    # Only up-sampling differs (ResizeNearestNeighbor vs reshape + tile; neither has a FLOP count).
    assert model_stats.count_flops(ours, (size, size, 3)) == pytest.approx(oracle_flops, rel=0.01)
