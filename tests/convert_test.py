"""Model Garden -> spinenet_tf conversion: every variant's checkpoint, the live-model path, on non-square inputs
(`make test` runs the small variants; `make test-slow` the big ones).

The oracle is tf-models-official 2.20.0 (`official.vision.modeling`, built by tests/oracle.py). Its outputs on the
same input and weights are the golden values; agreement is required within 1e-4 relative (the backbone issue's bound).
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import oracle
import spinenet_tf
import testing
from spinenet_tf import convert, registry
from spinenet_tf.model_stats import count_params

pytestmark = pytest.mark.oracle

RTOL = 1e-4


def _max_relative_error(mg_outputs, our_outputs):
    errors = {}
    for level, ours in our_outputs.items():
        expected = mg_outputs[str(level)].numpy()
        errors[level] = float(np.max(np.abs(expected - np.asarray(ours))) / np.max(np.abs(expected)))
    return errors


def _check_endpoints(mg, ours, height, width, seed):
    x = np.random.default_rng(seed).normal(size=(2, height, width, 3)).astype(np.float32)
    errors = _max_relative_error(mg(x, training=False), ours(x, training=False))
    assert set(errors) == set(range(3, 8))
    assert max(errors.values()) < RTOL, errors


# The backbone-only entry points (a live model; a backbone checkpoint with optimizer slots) on one variant of each
# block family, and on the backbones no registry detector has: every detector's backbone goes through the same layer
# mapping in test_retinanet_checkpoint_matches_model_garden below. Non-square inputs catch a transposed resample or
# a swapped axis that square ones hide. (ResNet-50, whose endpoints are C2..C5: tests/backbones/resnet_test.py.)
_BACKBONES_WITHOUT_A_DETECTOR = [name for name, row in registry.BACKBONES.items() if row.family != "resnet" and
                                 f"retinanet-{name}" not in registry.DETECTORS]


@pytest.mark.parametrize("name,height,width", testing.slow_unless(
    [(name, 128, 256) for name in ["spinenet-49s", "spinenet-mobile-49xs", *_BACKBONES_WITHOUT_A_DETECTOR]],
    key=lambda row: row[0]))
def test_live_model_and_checkpoint_match_model_garden(name, height, width, tmp_path):
    mg = oracle.backbone(name, height, width)
    oracle.randomize_batch_norm(mg, seed=1)
    ours = spinenet_tf.build_backbone(name, input_shape=(height, width, 3))

    # Live model.
    copied = convert.from_model_garden(mg, ours)
    assert copied == len(ours.weights)
    _check_endpoints(mg, ours, height, width, seed=2)

    # A checkpoint laid out as Model Garden training writes it (model/backbone, plus optimizer slots).
    oracle.randomize_batch_norm(mg, seed=3)
    optimizer = tf_keras.optimizers.SGD(momentum=0.9)
    optimizer.build(mg.trainable_variables)
    path = tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=mg), optimizer=optimizer).save(
        os.path.join(tmp_path, "ckpt"))
    loaded = convert.load_model_garden_checkpoint(path, ours)  # prefix found automatically
    assert loaded == len(ours.weights)
    _check_endpoints(mg, ours, height, width, seed=4)


def test_checkpoint_directory_is_accepted(tmp_path):
    mg = oracle.backbone("spinenet-mobile-49xs", 128, 128)
    oracle.randomize_batch_norm(mg, seed=5)
    tf.train.CheckpointManager(tf.train.Checkpoint(backbone=mg), str(tmp_path), max_to_keep=1).save()
    ours = spinenet_tf.build_backbone("spinenet-mobile-49xs", input_shape=(128, 128, 3))
    convert.load_model_garden_checkpoint(str(tmp_path), ours)
    _check_endpoints(mg, ours, 128, 128, seed=6)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    # A SpineNet-49 checkpoint into SpineNet-96 (twice the blocks): the user error of tensorflow/tpu#782, which
    # must fail at once and name what does not fit.
    mg = oracle.backbone("spinenet-49", 128, 128)
    path = tf.train.Checkpoint(backbone=mg).write(os.path.join(tmp_path, "ckpt"))
    ours = spinenet_tf.build_backbone("spinenet-96", input_shape=(128, 128, 3))
    with pytest.raises(ValueError, match=r"bottleneck_block layers where spinenet_96 has \d+: the checkpoint is for "
                                         r"another model"):
        convert.load_model_garden_checkpoint(path, ours)


def test_checkpoint_of_another_width_is_refused(tmp_path):
    mg = oracle.backbone("spinenet-49", 128, 128)
    path = tf.train.Checkpoint(backbone=mg).write(os.path.join(tmp_path, "ckpt"))
    ours = spinenet_tf.build_backbone("spinenet-49s", input_shape=(128, 128, 3))
    with pytest.raises(ValueError, match=r"shape .* does not fit .*: the checkpoint is for another model"):
        convert.load_model_garden_checkpoint(path, ours)


def test_missing_or_bad_checkpoint_is_one_clear_error(tmp_path):
    ours = spinenet_tf.build_backbone("spinenet-mobile-49xs", input_shape=(128, 128, 3))
    with pytest.raises(ValueError, match="no checkpoint in this directory"):
        convert.load_model_garden_checkpoint(str(tmp_path), ours)
    bogus = tmp_path / "bogus.index"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable TensorFlow checkpoint"):
        convert.load_model_garden_checkpoint(str(tmp_path / "bogus"), ours)


# --- RetinaNet: backbone + head -------------------------------------------------------------------------------

NUM_CLASSES = 91  # the paper's heads, so the parameter counts below are the ones its tables give


# Every registry detector: Model Garden's parameter count (trainable, and all) and its outputs after conversion.
@pytest.mark.parametrize("name", testing.slow_unless(list(registry.DETECTORS)))
def test_retinanet_checkpoint_matches_model_garden(name, tmp_path):
    from spinenet_tf.detection import anchors as anchors_lib

    height, width = 128, 256
    mg = oracle.retinanet(name, NUM_CLASSES, height, width)
    oracle.randomize_batch_norm(mg, seed=7)
    rng = np.random.default_rng(8)
    for variable in mg.weights:  # head biases too: the class prior alone would hide a swapped predictor
        if variable.name.split("/")[-1].startswith("bias"):
            variable.assign(rng.normal(0.0, 0.2, tuple(variable.shape)).astype(np.float32))
    path = tf.train.Checkpoint(model=mg).save(os.path.join(tmp_path, "ckpt"))  # as MG training: model/_backbone, _head

    ours = spinenet_tf.build_detector(name, num_classes=NUM_CLASSES, input_shape=(height, width))
    assert ours.count_params() == mg.count_params()
    assert count_params(ours) == count_params(mg)  # trainable
    assert convert.load_model_garden_checkpoint(path, ours) == len(ours.weights)

    x = np.random.default_rng(9).normal(size=(2, height, width, 3)).astype(np.float32)
    expected = mg(x, image_shape=tf.constant([[height, width]] * 2), training=False)
    actual = ours(x, training=False)
    for key, last_dim in (("cls_outputs", NUM_CLASSES), ("box_outputs", 4)):
        reference = anchors_lib.flatten_levels({int(level): v for level, v in expected[key].items()}, last_dim).numpy()
        error = np.max(np.abs(reference - np.asarray(actual[key]))) / np.max(np.abs(reference))
        assert error < RTOL, (key, error)


def test_backbone_checkpoint_cannot_fill_a_detector(tmp_path):
    mg = oracle.backbone("spinenet-mobile-49xs", 128, 128)
    path = tf.train.Checkpoint(backbone=mg).write(os.path.join(tmp_path, "ckpt"))
    ours = spinenet_tf.build_detector("retinanet-spinenet-mobile-49xs", num_classes=NUM_CLASSES, input_shape=(128, 128))
    with pytest.raises(ValueError, match="backbone-only checkpoint cannot fill a detector's head"):
        convert.load_model_garden_checkpoint(path, ours)
    # ...but it does fill the detector's backbone, the usual start for fine-tuning.
    assert convert.load_model_garden_checkpoint(path, ours.backbone) == len(ours.backbone.weights)
