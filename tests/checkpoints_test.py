"""Initial weights for fine-tuning (`spinenet_tf.checkpoints.find_init_checkpoint` / `initialize`): a run of ours or
a Model Garden checkpoint, told apart; `modules="all"` re-initialises only the class layers of another class count;
`modules="backbone"` loads the backbone alone; everything else that does not fit is one line naming the layer.

Our checkpoints are written here the way the training loop lays them out (`model_dir/train_config.json`,
`model_dir/checkpoints/ckpt-N`) from freshly built, shrunk registry models. Model Garden's come from the oracle
(tests/oracle.py): their values, read back through our models, are compared with Model Garden's own outputs.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import oracle
import spinenet_tf
from spinenet_tf import checkpoints, models
from spinenet_tf.training import config as config_lib

SIZE = 128
TINY = {"filter_size_scale": 0.25, "endpoints_num_filters": 8}  # shrunk SpineNet-Mobile-49XS (registry overrides)
DETECTOR = "retinanet-spinenet-mobile-49xs"


def _our_run(model_dir, task: str, model: str, num_classes: int, overrides=None, seed: int = 0):
    """A finished run of ours in `model_dir` (train_config.json + checkpoints/ckpt-3 over the model); returns the
    model. Every weight, batch-norm statistics included, is drawn at random, so that none equals a fresh init."""
    overrides = dict(TINY if overrides is None else overrides)
    config = config_lib.TrainConfig(task=task, model=model, model_dir=str(model_dir), image_size=(SIZE, SIZE),
                                    num_classes=num_classes, model_overrides=overrides)
    config.save()
    built = models.build_model(config.model_config())
    rng = np.random.default_rng(seed)
    for variable in built.weights:
        value = rng.uniform(0.5, 2.0, variable.shape) if "variance" in variable.path else rng.normal(
            0.0, 0.1, variable.shape)
        variable.assign(value.astype(np.float32))
    manager = checkpoints.manager(tf.train.Checkpoint(model=built), str(model_dir), max_to_keep=1)
    checkpoints.save(manager, 3)
    return built


def _tiny(kind: str, num_classes: int):
    if kind == "classifier":
        return spinenet_tf.build_classifier("spinenet-mobile-49xs", num_classes, (SIZE, SIZE), **TINY)
    return spinenet_tf.build_detector(DETECTOR, num_classes, (SIZE, SIZE), num_filters=8, **TINY)


def _values(layer) -> dict[str, np.ndarray]:
    return {variable.path: variable.numpy() for variable in layer.weights}


# --- finding and telling apart ------------------------------------------------------------------------------------

def test_ours_is_found_from_the_model_dir_or_any_of_its_checkpoints(tmp_path):
    _our_run(tmp_path / "run", "classification", "spinenet-mobile-49xs", 5)
    checkpoint = str(tmp_path / "run" / "checkpoints" / "ckpt-3")
    for path in (tmp_path / "run", tmp_path / "run" / "checkpoints", checkpoint):
        init = checkpoints.find_init_checkpoint(str(path))
        assert (init.path, init.source) == (checkpoint, checkpoints.SPINENET_TF)
        assert (init.config.task, init.config.model, init.config.num_classes) == (
            "classification", "spinenet-mobile-49xs", 5)


def test_model_garden_is_found_from_a_prefix_or_a_directory(tmp_path):
    mg = oracle.backbone("spinenet-mobile-49xs", SIZE, **TINY)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(backbone=mg), str(tmp_path), max_to_keep=1)
    path = manager.save()
    for given in (path, str(tmp_path)):
        assert checkpoints.find_init_checkpoint(given) == checkpoints.InitCheckpoint(path, checkpoints.MODEL_GARDEN)


def test_bad_paths_are_one_line_naming_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    config_lib.TrainConfig(task="detection", model=DETECTOR, model_dir=str(tmp_path / "fresh")).save()
    # Our checkpoint without its run's train_config.json beside it: the model cannot be rebuilt.
    lost = tmp_path / "lost"
    checkpoints.save(checkpoints.manager(tf.train.Checkpoint(model=_tiny("classifier", 3)), str(lost), 1), 1)
    # A checkpoint that holds no SpineNet at all (a Model Garden head alone, say).
    other = tf.train.Checkpoint(model=tf_keras.layers.Dense(3))
    other.model.build((None, 4))
    other_path = other.write(str(tmp_path / "dense" / "ckpt"))
    (tmp_path / "bogus.index").write_bytes(b"not a checkpoint")
    for path, message in (
            (tmp_path / "nowhere", "no such checkpoint or directory"),
            (tmp_path / "empty", "no checkpoint in this directory"),
            (tmp_path / "fresh", "a training --model_dir without a checkpoint in"),
            (lost / "checkpoints" / "ckpt-1", "a spinenet_tf checkpoint needs its run's train_config.json"),
            (other_path, "holds no SpineNet backbone"),
            (tmp_path / "bogus", "not a readable TensorFlow checkpoint")):
        with pytest.raises(ValueError) as raised:
            checkpoints.find_init_checkpoint(str(path))
        assert message in str(raised.value) and "\n" not in str(raised.value)
        assert str(raised.value).startswith(f"{path}: "), str(raised.value)


# --- ours -------------------------------------------------------------------------------------------------------

def test_all_restores_every_weight_and_reinitialises_the_class_layer_of_another_class_count(tmp_path):
    source = _our_run(tmp_path / "run", "detection", DETECTOR, 3, {**TINY, "num_filters": 8})
    model = _tiny("detector", 6)
    fresh = _values(model.head.class_predictor)
    line = checkpoints.initialize(model, str(tmp_path / "run"), "all")

    saved = _values(source)
    class_paths = set(fresh)
    assert len(class_paths) == 3
    for variable in model.weights:
        if variable.path in class_paths:
            np.testing.assert_array_equal(variable.numpy(), fresh[variable.path])  # left as initialised
        else:
            np.testing.assert_array_equal(variable.numpy(), saved[variable.path], err_msg=variable.path)
    assert line.startswith(f"initialised {model.name} from spinenet_tf checkpoint {tmp_path}/run/checkpoints/ckpt-3")
    assert (f"restored {len(model.weights) - 3} of {len(model.weights)} weights; not restored: "
            f"retinanet_head/class_predictor (3 weights, re-initialised: the checkpoint has 3 classes, this model 6)"
            in line)

    # The same class count: nothing is left out.
    again = _tiny("detector", 3)
    assert checkpoints.initialize(again, str(tmp_path / "run")).endswith(
        f"restored {len(again.weights)} of {len(again.weights)} weights; not restored: none")
    for variable in again.weights:
        np.testing.assert_array_equal(variable.numpy(), saved[variable.path], err_msg=variable.path)


def test_backbone_takes_a_classifiers_backbone_into_a_detector(tmp_path):
    source = _our_run(tmp_path / "run", "classification", "spinenet-mobile-49xs", 5)
    model = _tiny("detector", 4)
    head = _values(model.head)
    line = checkpoints.initialize(model, str(tmp_path / "run"), "backbone")
    saved = _values(source.backbone)
    assert len(model.backbone.weights) == len(saved) > 600
    for variable in model.backbone.weights:
        np.testing.assert_array_equal(variable.numpy(), saved[variable.path], err_msg=variable.path)
    for path, value in _values(model.head).items():
        np.testing.assert_array_equal(value, head[path])
    outside = len(model.weights) - len(model.backbone.weights)
    assert line.endswith(f"restored {len(saved)} of {len(model.weights)} weights; not restored: everything outside "
                         f"the backbone ({outside} weights, init_checkpoint_modules=backbone)")


def test_a_checkpoint_that_does_not_fit_is_one_line_naming_the_layer(tmp_path):
    _our_run(tmp_path / "wide", "classification", "spinenet-mobile-49xs", 5, {**TINY, "filter_size_scale": 0.5})
    with pytest.raises(ValueError, match=r"^\S+/wide/checkpoints/ckpt-3 \(spinenet-mobile-49xs\): does not fit "
                                         r"spinenet_mobile_49xs: layer stem_conv: stem_conv/kernel has shape "
                                         r"\(3, 3, 3, 4\) in the checkpoint, \(3, 3, 3, 2\) here$"):
        checkpoints.initialize(_tiny("detector", 3), str(tmp_path / "wide"), "backbone")

    # A detector's checkpoint fills a classifier's backbone, not all of it (its head is another).
    _our_run(tmp_path / "detector", "detection", DETECTOR, 3, {**TINY, "num_filters": 8})
    with pytest.raises(ValueError, match=r"ckpt-3: a --task=detection checkpoint \(retinanet-spinenet-mobile-49xs\) "
                                         r"cannot fill every layer of a --task=classification model; use "
                                         r"init_checkpoint_modules=backbone$"):
        checkpoints.initialize(_tiny("classifier", 3), str(tmp_path / "detector"), "all")
    checkpoints.initialize(_tiny("classifier", 3), str(tmp_path / "detector"), "backbone")

    # Same task, other head settings: the first layer that does not fit is named.
    with pytest.raises(ValueError, match=r"does not fit retinanet_spinenet_mobile_49xs: layer retinanet_head/"
                                         r"class_conv0: retinanet_head/class_conv0/pointwise_kernel has shape "
                                         r"\(1, 1, 8, 8\) in the checkpoint, \(1, 1, 8, 16\) here$"):
        checkpoints.initialize(spinenet_tf.build_detector(DETECTOR, 3, (SIZE, SIZE), num_filters=16, **TINY),
                               str(tmp_path / "detector"), "all")
    with pytest.raises(ValueError, match=r"does not fit retinanet_spinenet_mobile_49xs: the checkpoint's layer "
                                         r"retinanet_head/class_conv2 has no counterpart here$"):
        checkpoints.initialize(spinenet_tf.build_detector(DETECTOR, 3, (SIZE, SIZE), num_filters=8, num_convs=2,
                                                          **TINY), str(tmp_path / "detector"), "all")


def test_unknown_modules_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"init_checkpoint_modules='decoder': must be one of all, backbone"):
        checkpoints.initialize(_tiny("classifier", 3), str(tmp_path), "decoder")


# --- Model Garden -------------------------------------------------------------------------------------------------

@pytest.mark.oracle
def test_model_garden_classification_model_gives_its_backbone(tmp_path):
    """official/vision/modeling/classification_model.py nests its backbone (`model/layer_with_weights-0/...`)."""
    from official.vision.modeling import classification_model

    backbone = oracle.backbone("spinenet-mobile-49xs", SIZE, activation="swish", **TINY)
    mg = classification_model.ClassificationModel(backbone, num_classes=7, input_specs=oracle.input_spec(SIZE))
    oracle.randomize_batch_norm(mg, seed=11)
    path = tf.train.Checkpoint(model=mg).save(os.path.join(tmp_path, "ckpt"))
    model = _tiny("detector", 3)
    line = checkpoints.initialize(model, path, "backbone")
    assert f"restored {len(model.backbone.weights)} of {len(model.weights)} weights" in line

    x = np.random.default_rng(12).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    expected, actual = backbone(x, training=False), model.backbone(x, training=False)
    for level in range(3, 8):
        reference = expected[str(level)].numpy()
        error = np.max(np.abs(reference - np.asarray(actual[level]))) / np.max(np.abs(reference))
        assert error < 1e-4, (level, error)

    # Its head is Model Garden's (top level only), not ours: `all` is refused, into a detector or a classifier.
    for target in (_tiny("detector", 3), _tiny("classifier", 7)):
        with pytest.raises(ValueError, match=r"ckpt-1: .*; use init_checkpoint_modules=backbone$"):
            checkpoints.initialize(target, path, "all")


@pytest.fixture(scope="module")
def model_garden_maskrcnn(tmp_path_factory):
    """The path of a checkpoint of Model Garden's shrunk Mask R-CNN-49S (5 classes, 128x128; ~6 s to build), all
    weights drawn at random."""
    mg = oracle.maskrcnn("maskrcnn-spinenet-49s", num_classes=5, height=SIZE, **MASKRCNN_TINY)
    rng = np.random.default_rng(13)
    for variable in mg.weights:
        value = rng.uniform(0.5, 2.0, variable.shape) if "variance" in variable.name else rng.normal(
            0.0, 0.1, variable.shape)
        variable.assign(value.astype(np.float32))
    path = tf.train.Checkpoint(model=mg).save(str(tmp_path_factory.mktemp("mg") / "ckpt"))
    del mg
    oracle.clear_session()
    return path


MASKRCNN_TINY = dict(filter_size_scale=0.25, endpoints_num_filters=16, rpn_num_filters=16, box_num_convs=1,
                     box_num_filters=8, box_fc_dims=32, mask_num_convs=1, mask_num_filters=8)


@pytest.mark.oracle
def test_model_garden_maskrcnn_to_another_class_count(model_garden_maskrcnn):
    from spinenet_tf import convert

    reference = spinenet_tf.build_detector("maskrcnn-spinenet-49s", 5, (SIZE, SIZE), **MASKRCNN_TINY)
    assert convert.load_model_garden_checkpoint(model_garden_maskrcnn, reference) == len(reference.weights)
    model = spinenet_tf.build_detector("maskrcnn-spinenet-49s", 3, (SIZE, SIZE), **MASKRCNN_TINY)
    class_layers = convert.class_prediction_layers(model)
    fresh = {variable.path: variable.numpy() for layer in class_layers for variable in layer.weights}
    line = checkpoints.initialize(model, model_garden_maskrcnn, "all")
    assert ("not restored: detection_head/detection_scores, detection_head/detection_boxes, mask_head/mask_logits "
            "(6 weights, re-initialised: the checkpoint's class count is not this model's 3)") in line
    loaded = {variable.path: variable.numpy() for variable in reference.weights}
    for variable in model.weights:
        expected = fresh[variable.path] if variable.path in fresh else loaded[variable.path]
        np.testing.assert_array_equal(variable.numpy(), expected, err_msg=variable.path)

    # Into a RetinaNet: the backbone only.
    detector = spinenet_tf.build_detector("retinanet-spinenet-49s", 3, (SIZE, SIZE), filter_size_scale=0.25,
                                          endpoints_num_filters=16, num_filters=8)
    with pytest.raises(ValueError, match=r"ckpt-1: a Mask R-CNN checkpoint \(RPN, box and mask heads\) cannot fill a "
                                         r"RetinaNet's head; use init_checkpoint_modules=backbone$"):
        checkpoints.initialize(detector, model_garden_maskrcnn, "all")
    checkpoints.initialize(detector, model_garden_maskrcnn, "backbone")
    for variable in detector.backbone.weights:
        np.testing.assert_array_equal(variable.numpy(), loaded[variable.path], err_msg=variable.path)
