"""`build_detector("retinanet-resnet50-fpn")`, the SpineNet paper's R50-FPN baseline (arXiv:1912.05027, Table 3 / §5),
against Model Garden's RetinaNet on ResNet-50 + FPN (tests/oracle.py: `factory.build_retinanet` of its
`configs.retinanet.RetinaNet`, the `retinanet_resnetfpn_coco` experiment's model), weight for weight.

Golden numbers are the oracle's (tf-models-official 2.20.0), computed in the tests: its trainable parameters (at 91
classes 34,091,159) and multiply-adds (`model_stats.count_flops` of its backbone -> decoder -> head, as
tests/model_stats_test.py counts Model Garden's backbones: 96.93 B at 640x640), and its raw class and box outputs per
level on the same input and weights (agreement within 1e-4 relative, as tests/convert_test.py asks of every detector;
measured: identical). The paper's Table 3 R50-FPN row (640, 34.0 M params, 96.8 B FLOPs) is checked against the
oracle's count, which we hold (the registry row notes the gap).
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
from spinenet_tf import checkpoints, convert, model_stats, registry
from spinenet_tf.detection import anchors as anchors_lib
from spinenet_tf.detection.targets import assign_targets

pytestmark = pytest.mark.oracle

NAME = "retinanet-resnet50-fpn"
NUM_CLASSES = 5
HEIGHT, WIDTH = 128, 256  # non-square: a transposed up-sampling or a swapped axis would show
RTOL = 1e-4
# Shrunk for the tests that need no oracle (the FPN and head keep their widths): ResNet-50 at a quarter width.
SMALL = dict(depth_multiplier=0.25)


def _free(*models):
    del models
    oracle.clear_session()
    keras.backend.clear_session()
    gc.collect()


def _randomize(mg, seed: int) -> None:
    """Batch-norm statistics and every bias (the class prior alone would hide a swapped predictor) redrawn."""
    oracle.randomize_batch_norm(mg, seed)
    rng = np.random.default_rng(seed + 100)
    for variable in mg.weights:
        if variable.name.split("/")[-1].startswith("bias"):
            variable.assign(rng.normal(0.0, 0.2, tuple(variable.shape)).astype(np.float32))


def _assert_outputs_match(mg, ours, seed: int) -> None:
    """Model Garden's raw class and box outputs and ours (split back into levels) agree at every level."""
    x = np.random.default_rng(seed).normal(size=(2, HEIGHT, WIDTH, 3)).astype(np.float32)
    scores, boxes = oracle.retinanet_raw_outputs(mg)(x, training=False)
    actual = ours(x, training=False)
    sizes = anchors_lib.feature_sizes(3, 7, (HEIGHT, WIDTH))
    for key, expected in (("cls_outputs", scores), ("box_outputs", boxes)):
        levels = anchors_lib.split_levels(actual[key], sizes, ours.anchor_generator.anchors_per_location)
        assert sorted(levels) == [3, 4, 5, 6, 7] and sorted(expected) == ["3", "4", "5", "6", "7"]
        for level, value in levels.items():
            reference = expected[str(level)].numpy()
            assert np.asarray(value).shape == reference.shape, (key, level)
            error = np.max(np.abs(reference - np.asarray(value))) / np.max(np.abs(reference))
            assert error < RTOL, (key, level, error)


@pytest.fixture(scope="module")
def model_garden():
    """Model Garden's R50-FPN RetinaNet with NUM_CLASSES classes at HEIGHT x WIDTH."""
    model = oracle.retinanet(NAME, NUM_CLASSES, HEIGHT, WIDTH)
    yield model
    _free(model)


@pytest.fixture(scope="module")
def ours():
    model = spinenet_tf.build_detector(NAME, num_classes=NUM_CLASSES, input_shape=(HEIGHT, WIDTH))
    yield model
    _free(model)


# --- the registry row is Model Garden's experiment --------------------------------------------------------------

def test_registry_row_is_model_gardens_resnetfpn_experiment():
    from official.core import exp_factory

    model = exp_factory.get_exp_config("retinanet_resnetfpn_coco").task.model
    spec = registry.DETECTORS[NAME]
    assert (model.backbone.type, model.backbone.resnet.model_id) == ("resnet", registry.BACKBONES[spec.backbone]
                                                                     .model_id)
    assert (model.decoder.type, model.decoder.fpn.num_filters) == ("fpn", spec.fpn_num_filters)
    assert (model.head.num_convs, model.head.num_filters, model.head.use_separable_conv) == (
        spec.head_num_convs, spec.head_num_filters, spec.head_separable)
    assert (model.min_level, model.max_level, model.input_size[:2]) == (3, 7, [spec.image_size] * 2)
    assert model.anchor.anchor_size == spec.anchor_size
    assert model.norm_activation.activation == spec.activation == "relu"
    task = exp_factory.get_exp_config("retinanet_resnetfpn_coco").task
    assert task.losses.l2_weight_decay == spec.weight_decay


# --- counts -----------------------------------------------------------------------------------------------------

# 640: the paper's resolution (fast enough for `make test`: no NMS call, see `oracle.retinanet_raw_outputs`); 128x256: a
# non-square size, where a mis-sized level would show in the FLOPs.
@pytest.mark.parametrize("height, width", [(128, 256), (640, 640)])
def test_params_and_flops_equal_model_garden(height, width):
    mg = oracle.retinanet(NAME, 91, height, width)
    mg_params = model_stats.count_params(mg)
    mg_flops = model_stats.count_flops(oracle.retinanet_raw_outputs(mg), (height, width, 3))
    _free(mg)
    model = spinenet_tf.build_detector(NAME, num_classes=91, input_shape=(height, width))
    assert model_stats.count_params(model) == mg_params
    # Both count the same convolutions and sums; only the per-group rounding of the halving may differ.
    assert model_stats.count_flops(model, (height, width, 3)) == pytest.approx(mg_flops, rel=1e-6)
    if (height, width) == (640, 640):
        # The paper's Table 3 R50-FPN row: 34.0 M / 96.8 B. Model Garden builds 0.3% / 0.1% more; we hold its count.
        assert mg_params / 1e6 == pytest.approx(34.0, rel=0.005)
        assert mg_flops / 1e9 == pytest.approx(96.8, rel=0.005)
    _free(model)


# --- weights ----------------------------------------------------------------------------------------------------

def test_weights_of_a_live_model_garden_model_give_its_outputs(model_garden, ours):
    _randomize(model_garden, seed=1)
    assert model_stats.count_params(ours) == model_stats.count_params(model_garden)
    assert convert.from_model_garden(model_garden, ours) == len(ours.weights)
    _assert_outputs_match(model_garden, ours, seed=2)


def test_a_model_garden_training_checkpoint_gives_its_outputs(model_garden, ours, tmp_path):
    _randomize(model_garden, seed=3)
    optimizer = tf_keras.optimizers.SGD(momentum=0.9)
    optimizer.build(model_garden.trainable_variables)
    # As MG training writes it: model/_backbone, model/_decoder, model/_head, plus optimizer slots.
    path = tf.train.Checkpoint(model=model_garden, optimizer=optimizer).save(os.path.join(tmp_path, "ckpt"))
    assert convert.load_model_garden_checkpoint(path, ours) == len(ours.weights)
    _assert_outputs_match(model_garden, ours, seed=4)
    # Its backbone alone loads into ours (`init_checkpoint_modules=backbone`).
    assert convert.load_model_garden_checkpoint(path, ours.backbone) == len(ours.backbone.weights)


def test_a_checkpoint_with_or_without_a_decoder_only_fits_its_kind(model_garden, tmp_path):
    path = tf.train.Checkpoint(model=model_garden).write(os.path.join(tmp_path, "fpn"))
    spinenet = spinenet_tf.build_detector("retinanet-spinenet-mobile-49xs", num_classes=NUM_CLASSES,
                                          input_shape=(HEIGHT, WIDTH))
    with pytest.raises(ValueError, match=r"the checkpoint has an FPN decoder 'model/_decoder', "
                                         r"retinanet_spinenet_mobile_49xs has none: the checkpoint is for another"):
        convert.load_model_garden_checkpoint(path, spinenet)
    # The same backbone and head without the decoder.
    headless = tf.train.Checkpoint(_backbone=model_garden.backbone, _head=model_garden.head)
    path = tf.train.Checkpoint(model=headless).write(os.path.join(tmp_path, "no_fpn"))
    fpn = spinenet_tf.build_detector(NAME, num_classes=NUM_CLASSES, input_shape=(HEIGHT, WIDTH), **SMALL)
    with pytest.raises(ValueError, match=r"the checkpoint has no FPN decoder beside 'model/_backbone', "
                                         r"retinanet_resnet50_fpn has one: the checkpoint is for another model"):
        convert.load_model_garden_checkpoint(path, fpn)  # refused before any weight is compared
    _free(spinenet, fpn)


# --- the model as ours ------------------------------------------------------------------------------------------

def test_activation_is_model_gardens_relu_unless_overridden():
    model = spinenet_tf.build_detector(NAME, num_classes=3, input_shape=(128, 128), **SMALL)
    assert (model.backbone.activation, model.decoder.activation, model.head.activation) == ("relu",) * 3
    assert (model.anchor_size, model.weight_decay) == (4.0, 1e-4)
    swish = spinenet_tf.build_detector(NAME, num_classes=3, input_shape=(128, 128), activation="swish", **SMALL)
    assert (swish.backbone.activation, swish.decoder.activation, swish.head.activation) == ("swish",) * 3
    _free(model, swish)


def test_keras_round_trip_and_checkpoint_keep_every_weight(tmp_path):
    model = spinenet_tf.build_detector(NAME, num_classes=3, input_shape=(128, 128), **SMALL)
    x = np.random.default_rng(0).normal(size=(2, 128, 128, 3)).astype(np.float32)
    loaded = testing.assert_keras_round_trip(model, x, tmp_path)
    assert type(loaded.decoder) is spinenet_tf.FPN and loaded.decoder.get_config() == model.decoder.get_config()
    # tf.train.Checkpoint sees the FPN's per-level layers (kept in dicts; spinenet_tf.layers.tracking).
    rng = np.random.default_rng(1)
    for weight in model.weights:
        weight.assign(weight.numpy() + rng.normal(0.5, 0.1, weight.shape).astype(weight.dtype))
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    assert len([name for name, _ in tf.train.list_variables(path) if name.startswith("model/")]) == len(model.weights)
    checkpoints.restore_model(loaded, checkpoint=path)
    assert all(np.array_equal(w.numpy(), v.numpy()) for w, v in zip(model.weights, loaded.weights))
    _free(model, loaded)


def test_one_training_step_updates_the_decoder():
    model = spinenet_tf.build_detector(NAME, num_classes=3, input_shape=(128, 128), **SMALL)
    boxes = np.array([[[20, 30, 90, 100]], [[40, 40, 120, 110]]], np.float32)
    targets = assign_targets(model.anchor_boxes, boxes, np.array([[0], [2]]))
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    before = [w.numpy() for w in model.decoder.weights]
    x = np.random.default_rng(0).normal(size=(2, 128, 128, 3)).astype(np.float32)
    loss = model.fit(x, targets, batch_size=2, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(loss)
    # Every FPN conv learns, and every FPN batch norm ran in training mode (its moving statistics moved). (A BN
    # gamma of P5-P7 may not move in one step: those levels hold 2 x 4 x 4 values or fewer here.)
    unmoved = [w.path for b, w in zip(before, model.decoder.weights) if np.array_equal(b, w.numpy())
               and w.path.rpartition("/")[2] in ("kernel", "bias", "moving_mean", "moving_variance")]
    assert not unmoved, unmoved
    _free(model)


def test_input_size_must_divide_by_2_to_the_max_level():
    # 160 suits ResNet-50 (a multiple of 32) but not P7.
    with pytest.raises(ValueError, match=r"input width 160 is not divisible by 128 \(2\*\*max_level, max_level=7\)"):
        spinenet_tf.build_detector(NAME, num_classes=3, input_shape=(128, 160), **SMALL)
