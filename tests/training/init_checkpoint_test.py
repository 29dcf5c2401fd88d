"""Fine-tuning runs: `--init_checkpoint` / `--init_checkpoint_modules` / `--freeze_backbone` through the training loop.

The Model Garden checkpoints are written by the oracle (tests/oracle.py) the way Model Garden training writes them
(`tf.train.Checkpoint(model=..., optimizer=...)`), with every weight moved off its initial value, and the golden
values are Model Garden's own weights and outputs. The runs take one step at learning rate 0 with batch-norm
momentum 1, so that every restored weight, batch-norm statistics included, leaves the run as it came in.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import oracle
import testing
from spinenet_tf import checkpoints, models
from spinenet_tf.detection import anchors as anchors_lib
from spinenet_tf.training import config as config_lib
from spinenet_tf.training import loop

SIZE = 128
DETECTOR = "retinanet-spinenet-mobile-49xs"
TINY = {"filter_size_scale": 0.25, "endpoints_num_filters": 8}  # the shrunk SpineNet-Mobile-49XS of the tests
TINY_DETECTOR = {**TINY, "num_filters": 8}


def _config(model_dir, **changes) -> config_lib.TrainConfig:
    """One training step of the tiny detector at 128 on 4 built-in images, learning rate 0, nothing decayed."""
    config = config_lib.TrainConfig(
        task="detection", model=DETECTOR, model_dir=str(model_dir), image_size=(SIZE, SIZE), num_classes=6,
        model_overrides=TINY_DETECTOR, mode="train", batch_size=2, train_steps=1,
        input=config_lib.InputConfig(train_data="builtin:shapes:train[:4]", shuffle_buffer=4, cache=True),
        optimizer=config_lib.OptimizerConfig(learning_rate=0.0, weight_decay=0.0, schedule="constant"),
        runtime=config_lib.RuntimeConfig(log_steps=1, progress_bar=False))
    return dataclasses.replace(config, **changes)


def _perturb(model: tf_keras.Model, seed: int) -> None:
    """Moves every Model Garden weight off its initial value: random batch-norm statistics, noise on the rest (the
    zero biases and the class prior included)."""
    oracle.randomize_batch_norm(model, seed)
    rng = np.random.default_rng(seed + 1)
    for variable in model.weights:
        if variable.name.split("/")[-1].split(":")[0] not in ("moving_mean", "moving_variance", "gamma", "beta"):
            variable.assign_add(rng.normal(0.0, 0.02, tuple(variable.shape)).astype(np.float32))


def _save_as_model_garden_training(model: tf_keras.Model, directory) -> str:
    optimizer = tf_keras.optimizers.SGD(momentum=0.9)
    optimizer.build(model.trainable_variables)
    return tf.train.Checkpoint(model=model, optimizer=optimizer).save(os.path.join(directory, "ckpt"))


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def _nothing_written(model_dir) -> bool:
    return not os.path.exists(model_dir) or not os.listdir(model_dir)


# --- from Model Garden --------------------------------------------------------------------------------------------

@pytest.mark.oracle
def test_model_garden_retinanet_fine_tunes_to_another_class_count(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="absl")  # whatever verbosity parsed flags left
    mg = oracle.retinanet(DETECTOR, num_classes=91, height=SIZE)  # the registry row, as Model Garden's COCO heads
    _perturb(mg, seed=21)
    path = _save_as_model_garden_training(mg, tmp_path / "mg")

    model_dir = tmp_path / "run"
    config = _config(model_dir, model_overrides={"norm_momentum": 1.0}, init_checkpoint=path)
    loop.run(config)
    assert f"initialised retinanet_spinenet_mobile_49xs from Model Garden checkpoint {path}" in caplog.text
    assert ("not restored: retinanet_head/class_predictor (3 weights, re-initialised: the checkpoint's class count is "
            "not this model's 6)") in caplog.text
    _, ours = loop.trained_model(config_lib.TrainConfig.load(str(model_dir)))

    # Every kernel but the class layer's (backbone, box head, class tower) is one of Model Garden's, value for value.
    mg_kernels = {variable.numpy().tobytes() for variable in mg.weights if "kernel" in variable.name}
    kernels = [v for v in ours.weights if "kernel" in v.path and "class_predictor" not in v.path]
    assert len(kernels) == len(mg_kernels) - 2  # its classifier's depthwise and pointwise kernels
    for variable in kernels:
        assert variable.numpy().tobytes() in mg_kernels, variable.path
    # And the network computes Model Garden's boxes on the same input.
    x = np.random.default_rng(22).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    expected = mg(x, image_shape=tf.constant([[SIZE, SIZE]] * 2), training=False)
    actual = ours(x, training=False)
    reference = anchors_lib.flatten_levels({int(k): v for k, v in expected["box_outputs"].items()}, 4).numpy()
    assert _relative_error(actual["box_outputs"], reference) < 1e-4
    # The class layer is new: 6 classes, none of Model Garden's values.
    predictor = ours.head.class_predictor
    assert actual["cls_outputs"].shape == (2, reference.shape[1], 6)
    assert predictor.weights[-1].shape == (9 * 6,)
    mg_values = {variable.numpy().tobytes() for variable in mg.weights}
    assert not any(variable.numpy().tobytes() in mg_values for variable in predictor.weights)


@pytest.mark.oracle
def test_model_garden_classification_backbone_into_a_detector(tmp_path, caplog):
    from official.vision.modeling import classification_model

    caplog.set_level(logging.INFO, logger="absl")  # whatever verbosity parsed flags left
    backbone = oracle.backbone("spinenet-mobile-49xs", SIZE, activation="swish", **TINY)
    mg = classification_model.ClassificationModel(backbone, num_classes=10, input_specs=oracle.input_spec(SIZE))
    _perturb(mg, seed=23)
    path = _save_as_model_garden_training(mg, tmp_path / "mg")

    model_dir = tmp_path / "run"
    config = _config(model_dir, model_overrides={**TINY_DETECTOR, "norm_momentum": 1.0}, init_checkpoint=path,
                     init_checkpoint_modules="backbone")
    loop.run(config)
    assert "not restored: everything outside the backbone" in caplog.text
    _, ours = loop.trained_model(config_lib.TrainConfig.load(str(model_dir)))
    x = np.random.default_rng(24).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    expected, actual = backbone(x, training=False), ours.backbone(x, training=False)
    for level in range(3, 8):
        assert _relative_error(actual[level], expected[str(level)]) < 1e-4, level


# --- bad input: one line naming the flag, nothing written -----------------------------------------------------

def _our_run(model_dir, task: str, model: str, num_classes: int, overrides) -> str:
    """A run of ours in `model_dir` as the loop lays it out (train_config.json, checkpoints/ckpt-1), fresh weights."""
    config = config_lib.TrainConfig(task=task, model=model, model_dir=str(model_dir), image_size=(SIZE, SIZE),
                                    num_classes=num_classes, model_overrides=overrides)
    config.save()
    built = models.build_model(config.model_config())
    return checkpoints.save(checkpoints.manager(tf.train.Checkpoint(model=built), str(model_dir), 1), 1)


def _model_garden_head_alone(directory) -> str:
    """A Model Garden RetinaNet head without its backbone."""
    from official.vision.modeling.heads import dense_prediction_heads

    head = dense_prediction_heads.RetinaNetHead(min_level=3, max_level=7, num_classes=3, num_anchors_per_location=9,
                                                num_convs=1, num_filters=8)
    head({str(level): tf.zeros([1, SIZE // 2 ** level, SIZE // 2 ** level, 8]) for level in range(3, 8)})
    return tf.train.Checkpoint(model=tf.train.Checkpoint(head=head)).write(os.path.join(directory, "ckpt"))


@pytest.mark.parametrize("case", ["missing", "other_architecture", "no_backbone", "maskrcnn_into_retinanet"])
def test_a_bad_init_checkpoint_is_one_line_before_anything_is_written(tmp_path, case):
    if case == "missing":
        path, modules = str(tmp_path / "nowhere" / "ckpt-5"), "all"
        message = f"--init_checkpoint: {path}: no such checkpoint or directory"
    elif case == "other_architecture":  # a classifier of twice the width
        path = _our_run(tmp_path / "wide", "classification", "spinenet-mobile-49xs", 5,
                        {**TINY, "filter_size_scale": 0.5})
        modules = "backbone"
        message = (f"--init_checkpoint: {path} (spinenet-mobile-49xs): does not fit spinenet_mobile_49xs: layer "
                   f"stem_conv: stem_conv/kernel has shape (3, 3, 3, 4) in the checkpoint, (3, 3, 3, 2) here")
    elif case == "no_backbone":
        path, modules = _model_garden_head_alone(tmp_path / "head"), "backbone"
        message = (f"--init_checkpoint: {path}: holds no SpineNet backbone (neither a spinenet_tf training checkpoint "
                   f"nor a Model Garden one)")
    else:
        path = _our_run(tmp_path / "maskrcnn", "instance_segmentation", "maskrcnn-spinenet-49s", 4,
                        {**TINY, "endpoints_num_filters": 16, "rpn_num_filters": 16, "box_num_convs": 1,
                         "box_num_filters": 8, "box_fc_dims": 32, "mask_num_convs": 1, "mask_num_filters": 8})
        modules = "all"
        message = (f"--init_checkpoint: {path}: a --task=instance_segmentation checkpoint (maskrcnn-spinenet-49s) "
                   f"cannot fill every layer of a --task=detection model; use init_checkpoint_modules=backbone")
    model_dir = tmp_path / "run"
    with pytest.raises(ValueError) as raised:
        loop.run(_config(model_dir, init_checkpoint=path, init_checkpoint_modules=modules))
    assert str(raised.value) == message
    assert _nothing_written(model_dir)


def test_the_flags_reach_the_config():
    config = testing.train_config(*testing.TINY_DETECTOR_FLAGS, "--model_dir=/tmp/unused",
                                  "--init_checkpoint=gs://bucket/run", "--init_checkpoint_modules=backbone",
                                  "--freeze_backbone").validate()
    assert (config.init_checkpoint, config.init_checkpoint_modules, config.freeze_backbone) == (
        "gs://bucket/run", "backbone", True)


def test_cli_missing_init_checkpoint_exits_2_with_one_line(tmp_path):
    model_dir = tmp_path / "run"
    result = testing.run_train(*testing.TINY_DETECTOR_FLAGS, f"--model_dir={model_dir}", "--mode=train",
                               f"--init_checkpoint={tmp_path / 'nowhere'}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: --init_checkpoint: {tmp_path / 'nowhere'}: no such checkpoint or directory"]
    assert _nothing_written(model_dir)


# --- resume, freeze -----------------------------------------------------------------------------------------------

def test_a_resumed_run_ignores_init_checkpoint(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="absl")  # whatever verbosity parsed flags left
    model_dir = tmp_path / "run"
    first = loop.Trainer(_config(model_dir), flags_text=None)
    first.save()
    saved = checkpoints.latest_checkpoint(str(model_dir))
    # The init path does not even exist: a resumed run does not look at it.
    resumed = loop.Trainer(_config(model_dir, init_checkpoint=str(tmp_path / "nowhere")), flags_text=None)
    assert f"resuming from {saved}: --init_checkpoint={tmp_path / 'nowhere'} is ignored" in caplog.text
    assert "initialised" not in caplog.text
    assert resumed.restore() == saved
    for mine, theirs in zip(resumed.model.weights, first.model.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    # --freeze_backbone changes which weights the optimizer holds: a resumed run must keep the setting.
    with pytest.raises(loop.TrainingError, match=r"--freeze_backbone=True: the run in .* was started with "
                                                 r"--freeze_backbone=False"):
        loop.Trainer(_config(model_dir, freeze_backbone=True), flags_text=None)


def test_freeze_backbone_keeps_its_weights_and_batch_norm_statistics(tmp_path):
    config = _config(tmp_path / "run", freeze_backbone=True, train_steps=2,
                     optimizer=config_lib.OptimizerConfig(learning_rate=0.1, weight_decay=1e-3, schedule="constant"))
    trainer = loop.Trainer(config, flags_text=None)
    model = trainer.model
    backbone_before = {v.path: v.numpy() for v in model.backbone.weights}
    head_before = {v.path: v.numpy() for v in model.head.weights}
    assert not model.backbone.trainable_weights
    # The step, the L2 term and the optimizer see the head alone.
    assert {v.path for v in model.trainable_variables} == {v.path for v in model.head.trainable_weights}
    optimizer_shapes = sorted(tuple(v.shape) for v in trainer.optimizer.variables if len(v.shape))
    assert optimizer_shapes == sorted(tuple(v.shape) for v in model.head.trainable_weights)
    head_kernels = [v for v in model.head.trainable_weights if v.path.endswith("kernel")]
    np.testing.assert_allclose(model.l2_loss(), 1e-3 * sum(np.sum(v.numpy() ** 2) / 2 for v in head_kernels),
                               rtol=1e-5)

    trainer.train()
    assert trainer.step == 2
    for variable in model.backbone.weights:  # kernels, batch-norm scales and moving statistics alike
        np.testing.assert_array_equal(variable.numpy(), backbone_before[variable.path], err_msg=variable.path)
    moved = {v.path for v in model.head.weights if not np.array_equal(v.numpy(), head_before[v.path])}
    trainable = {v.path for v in model.head.trainable_weights}
    # The head trains (two small steps leave some batch-norm scales of the deep tower within float32's resolution).
    assert {v.path for layer in (model.head.class_predictor, model.head.box_predictor) for v in layer.weights} <= moved
    assert len(moved & trainable) > 0.5 * len(trainable)
    assert any("moving_mean" in path for path in moved)  # and the head's batch norms still learn their statistics
