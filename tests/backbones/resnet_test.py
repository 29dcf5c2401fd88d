"""Tests of spinenet_tf/backbones/resnet.py (`ResNet`, the registry's "resnet-50") against Model Garden's
`official/vision/modeling/backbones/resnet.py::ResNet` (tf-models-official 2.20.0, tests/oracle.py), weight for weight.

Golden numbers: the oracle's, built in each test: its trainable / non-trainable parameter counts and weight shapes,
its C2..C5 on the same input and weights (within 1e-4 relative, the backbone parity bound of tests/convert_test.py),
and its per-group stochastic depth rates (`nn_layers.get_stochastic_depth_rate(rate, L, 5)` at level L). Depths 18
(residual blocks) and 50 (bottleneck) run in `make test`; 34, 101 and 152 (the same code paths, more blocks) in
`make test-slow`.
"""

import gc
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import oracle
import spinenet_tf
import testing
from spinenet_tf import convert, model_stats, registry
from spinenet_tf.backbones.resnet import RESNET_SPECS, ResNet
from spinenet_tf.backbones.spinenet import FeatureSpec

RTOL = 1e-4


def _images(batch, height, width, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, height, width, 3)).astype(np.float32)


def _max_relative_errors(mg, ours, x) -> dict[int, float]:
    expected, actual = mg(x, training=False), ours(x, training=False)
    assert sorted(actual) == [2, 3, 4, 5] and sorted(expected) == ["2", "3", "4", "5"]
    return {level: float(np.max(np.abs(expected[str(level)].numpy() - np.asarray(value)))
                         / np.max(np.abs(expected[str(level)].numpy()))) for level, value in actual.items()}


@pytest.mark.oracle
@pytest.mark.parametrize("model_id", [pytest.param(depth, marks=() if depth in (18, 50) else pytest.mark.slow)
                                      for depth in RESNET_SPECS])
def test_weights_match_model_garden(model_id):
    mg = oracle.resnet(model_id)
    ours = ResNet(input_shape=(128, 128, 3), model_id=model_id)
    assert model_stats.count_params(ours) == model_stats.count_params(mg)
    assert sum(int(np.prod(w.shape)) for w in ours.non_trainable_weights) == sum(
        int(np.prod(w.shape)) for w in mg.non_trainable_weights)
    assert sorted(tuple(w.shape) for w in ours.weights) == sorted(tuple(w.shape) for w in mg.weights)
    assert {level: spec.channels for level, spec in ours.output_specs.items()} == {
        int(level): shape[-1] for level, shape in mg.output_specs.items()}
    del mg, ours
    oracle.clear_session()
    keras.backend.clear_session()
    gc.collect()


def test_registry_row_is_model_gardens_resnet_50():
    assert registry.BACKBONES["resnet-50"].kwargs() == oracle.backbone_row("resnet-50")[1] == {"model_id": 50}


@pytest.mark.oracle
def test_live_model_and_checkpoints_match_model_garden(tmp_path):
    height, width = 128, 256  # non-square: a swapped axis would show
    mg = oracle.backbone("resnet-50", height, width)
    ours = spinenet_tf.build_backbone("resnet-50", input_shape=(height, width, 3))
    assert ours.output_specs == {level: FeatureSpec(2 ** level, 64 * 2 ** level) for level in range(2, 6)}

    # Live model.
    oracle.randomize_batch_norm(mg, seed=1)
    assert convert.from_model_garden(mg, ours) == len(ours.weights)
    errors = _max_relative_errors(mg, ours, _images(2, height, width, seed=2))
    assert max(errors.values()) < RTOL, errors

    # A checkpoint laid out as Model Garden training writes it (model/backbone, plus optimizer slots).
    oracle.randomize_batch_norm(mg, seed=3)
    optimizer = tf_keras.optimizers.SGD(momentum=0.9)
    optimizer.build(mg.trainable_variables)
    path = tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=mg), optimizer=optimizer).save(
        os.path.join(tmp_path, "ckpt"))
    assert convert.load_model_garden_checkpoint(path, ours) == len(ours.weights)  # prefix found automatically
    errors = _max_relative_errors(mg, ours, _images(2, height, width, seed=4))
    assert max(errors.values()) < RTOL, errors

    # A classification model's checkpoint, as MG's ImageNet ResNet-50 that its `retinanet_resnetfpn_coco` experiment
    # starts from (init_checkpoint_modules=backbone): the backbone is found inside it.
    from official.vision.modeling import classification_model

    oracle.randomize_batch_norm(mg, seed=5)
    classifier = classification_model.ClassificationModel(mg, num_classes=10, input_specs=oracle.input_spec(
        height, width))
    path = tf.train.Checkpoint(model=classifier).save(os.path.join(tmp_path, "classifier"))
    assert convert.load_model_garden_checkpoint(path, ours) == len(ours.weights)
    errors = _max_relative_errors(mg, ours, _images(2, height, width, seed=6))
    assert max(errors.values()) < RTOL, errors


@pytest.mark.oracle
def test_stochastic_depth_rate_per_group_follows_model_garden():
    mg = oracle.resnet(18, init_stochastic_depth_rate=0.2)
    ours = ResNet(input_shape=(128, 128, 3), model_id=18, stochastic_depth_rate=0.2)
    expected = [layer._stochastic_depth_drop_rate for layer in mg.layers if "residual_block" in layer.name]
    actual = [layer.stochastic_depth_rate for layer in ours.layers if "_residual" in layer.name]
    assert actual == pytest.approx(expected)
    assert actual == pytest.approx([0.2 * level / 5 for level in (2, 2, 3, 3, 4, 4, 5, 5)])


def test_blocks_are_named_by_level_for_the_per_level_counts():
    model = spinenet_tf.build_backbone("resnet-50", input_shape=(128, 128, 3))
    names = [layer.name for layer in model.layers if "bottleneck" in layer.name]
    assert names[0] == "block00_l2_bottleneck" and names[-1] == "block15_l5_bottleneck"
    assert [int(name.split("_")[1][1:]) for name in names] == [2] * 3 + [3] * 4 + [4] * 6 + [5] * 3  # 3, 4, 6, 3
    stats = model_stats.model_stats(model, (128, 128, 3))
    assert list(stats.per_level) == ["stem", "L2", "L3", "L4", "L5"]


def test_keras_round_trip(tmp_path):
    overrides = dict(activation="swish", stochastic_depth_rate=0.2, norm_momentum=0.9, norm_epsilon=1e-4,
                     depth_multiplier=0.25)
    model = spinenet_tf.build_backbone("resnet-50", input_shape=(128, 128, 3), **overrides)
    loaded = testing.assert_keras_round_trip(model, _images(2, 128, 128), tmp_path)
    for key, value in {"model_id": 50, **overrides}.items():
        assert loaded.get_config()[key] == value, key


@pytest.mark.parametrize("kwargs, match", [
    (dict(model_id=42), r"model_id=42: must be one of 18, 34, 50, 101, 152"),
    (dict(input_shape=(128, 100, 3)), r"input width 100 is not divisible by 32 \(the stride of C5\)"),
    (dict(input_shape=(128, 128)), r"input_shape=\(128, 128\): expected \(H, W, 3\)"),
    (dict(depth_multiplier=0.0), r"depth_multiplier=0.0: must be > 0"),
    (dict(stochastic_depth_rate=1.0), r"stochastic_depth_rate=1.0: must be in \[0, 1\)"),
    (dict(activation="gelu"), r"activation 'gelu' is not one of relu, swish, hard_swish"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet(**{"input_shape": (128, 128, 3), **kwargs})


def test_registry_overrides_and_no_classifier():
    with pytest.raises(ValueError, match=r"resnet-50: unknown override\(s\) resample_alpha; allowed: activation, "
                                         r"norm_momentum, norm_epsilon, use_sync_bn, stochastic_depth_rate, "
                                         r"depth_multiplier$"):
        spinenet_tf.build_backbone("resnet-50", input_shape=(128, 128, 3), resample_alpha=0.5)
    # Our classifier's head averages P3..P7 of one width; a ResNet's C2..C5 have four.
    assert "classifier-resnet-50" not in spinenet_tf.list_models("classifier")
    for name in ("resnet-50", "classifier-resnet-50"):
        with pytest.raises(ValueError, match=rf"unknown classifier '{name}'; valid names: classifier-spinenet-49s"):
            spinenet_tf.build_classifier(name, num_classes=10)
