"""`TrainConfig`: validation names the flag, JSON round trip, model-defining differences."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from spinenet_tf import models
from spinenet_tf.training import config as config_lib


def _config(**changes) -> config_lib.TrainConfig:
    base = config_lib.TrainConfig(task="detection", model="retinanet-spinenet-mobile-49xs", model_dir="/tmp/run",
                                  image_size=(256, 256), input=config_lib.InputConfig(
                                      train_data="builtin:shapes", eval_data="builtin:shapes:validation"))
    return dataclasses.replace(base, **changes)


def test_valid_config_passes():
    assert _config().validate().model == "retinanet-spinenet-mobile-49xs"


@pytest.mark.parametrize("changes, message", [
    (dict(image_size=(600, 640)), r"--image_size=600,640: each side must be divisible by 128"),
    (dict(model="retinanet-spinenet-50"), r"--model='retinanet-spinenet-50': not a detection model; valid names: "
                                          r"retinanet-spinenet-49s"),
    (dict(task="segmentation"), r"--task='segmentation': must be one of detection, instance_segmentation, classification"),
    (dict(batch_size=0), r"--batch_size=0: must be >= 1"),
    (dict(mode="predict"), r"--mode='predict'"),
    (dict(model_dir=""), r"--model_dir: required"),
    (dict(input=config_lib.InputConfig(eval_data="builtin:shapes")), r"--train_data: required for --mode="),
    (dict(input=config_lib.InputConfig(train_data="builtin:shapes")), r"--eval_data: required for --mode="),
    (dict(optimizer=config_lib.OptimizerConfig(optimizer="lamb")), r"--optimizer='lamb'"),
    (dict(optimizer=config_lib.OptimizerConfig(warmup_steps=5000)), r"--warmup_steps=5000"),
    (dict(optimizer=config_lib.OptimizerConfig(decay_boundaries=(0.9, 0.5))), r"--lr_decay_boundaries=0.9,0.5"),
    (dict(runtime=config_lib.RuntimeConfig(strategy="horovod")), r"--strategy='horovod'"),
    (dict(optimizer=config_lib.OptimizerConfig(learning_rate=-0.1)), r"--learning_rate=-0.1: must be >= 0"),
    (dict(init_checkpoint="runs/x", init_checkpoint_modules="decoder"),
     r"--init_checkpoint_modules='decoder': must be one of all, backbone"),
    (dict(task="classification", model="spinenet-49", freeze_backbone=True, precise_bn_batches=4),
     r"--precise_bn_batches=4: nothing to re-estimate with --freeze_backbone"),
    (dict(precise_bn_batches=-1), r"--precise_bn_batches=-1: must be >= 0"),
    (dict(precise_bn_batches=8, task="instance_segmentation", model="maskrcnn-spinenet-49s"),
     r"--precise_bn_batches=8: not for --task=instance_segmentation"),
    (dict(precise_bn_batches=8, runtime=config_lib.RuntimeConfig(strategy="mirrored")),
     r"--precise_bn_batches=8: needs --strategy=default \(one replica\), not --strategy=mirrored"),
])
def test_validation_names_the_flag(changes, message):
    with pytest.raises(ValueError, match=message):
        _config(**changes).validate()


def test_fine_tuning_fields_default_to_a_fresh_start_and_round_trip(tmp_path):
    assert (_config().init_checkpoint, _config().init_checkpoint_modules, _config().freeze_backbone) == (
        "", "all", False)
    _config(optimizer=config_lib.OptimizerConfig(learning_rate=0.0)).validate()  # 0 trains nothing, on purpose
    config = _config(model_dir=str(tmp_path), init_checkpoint="gs://bucket/run", init_checkpoint_modules="backbone",
                     freeze_backbone=True)
    config.save()
    assert config_lib.TrainConfig.load(str(tmp_path)) == config
    # A train_config.json written before these fields existed still loads.
    data = json.loads(config.to_json())
    for field in ("init_checkpoint", "init_checkpoint_modules", "freeze_backbone"):
        del data[field]
    assert config_lib.TrainConfig.from_dict(data) == _config(model_dir=str(tmp_path))


def test_max_level_override_changes_the_divisor():
    _config(image_size=(192, 192), model_overrides={"max_level": 6}).validate()  # 192 = 3 * 2**6
    with pytest.raises(ValueError, match="divisible by 64"):
        _config(image_size=(160, 160), model_overrides={"max_level": 6}).validate()


def test_classification_accepts_backbone_names():
    _config(task="classification", model="spinenet-49").validate()
    _config(task="classification", model="classifier-spinenet-49").validate()


def test_json_round_trip(tmp_path):
    config = _config(model_dir=str(tmp_path), model_overrides={"activation": "relu"},
                     optimizer=config_lib.OptimizerConfig(decay_boundaries=(0.5, 0.75)))
    config.save()
    assert config_lib.TrainConfig.load(str(tmp_path)) == config


def test_load_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_config.json: no training config"):
        config_lib.TrainConfig.load(str(tmp_path))


def test_saved_model_part_reads_without_training_code(tmp_path):
    # `models.ModelConfig.load` (what export and checkpoint restoring read) sees the model a run trains.
    config = _config(model_dir=str(tmp_path), num_classes=3, model_overrides={"activation": "relu"},
                     optimizer=config_lib.OptimizerConfig(weight_decay=1e-4))
    config.save()
    assert models.ModelConfig.load(str(tmp_path)) == config.model_config()
    assert config.model_config().weight_decay == 1e-4  # SGD: the L2 term of the model's loss
    adamw = dataclasses.replace(config, optimizer=config_lib.OptimizerConfig(optimizer="adamw"))
    adamw.save()
    assert models.ModelConfig.load(str(tmp_path)).weight_decay == 0.0  # decoupled: none in the loss
    with pytest.raises(FileNotFoundError, match="train_config.json: no training config"):
        models.ModelConfig.load(str(tmp_path / "elsewhere"))


def test_progress_bar_defaults_to_whether_stdout_is_a_terminal(monkeypatch):
    class _Stdout:
        def __init__(self, tty: bool):
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    for tty in (True, False):
        monkeypatch.setattr(sys, "stdout", _Stdout(tty))
        assert config_lib.RuntimeConfig().show_progress_bar() is tty
        assert config_lib.RuntimeConfig(progress_bar=True).show_progress_bar() is True
        assert config_lib.RuntimeConfig(progress_bar=False).show_progress_bar() is False


def test_model_differences_lists_only_model_fields():
    saved = _config()
    assert saved.model_differences(_config(batch_size=64, train_steps=5)) == []
    assert saved.model_differences(_config(image_size=(384, 384))) == ["image_size: [256, 256] -> [384, 384]"]


@pytest.mark.parametrize("text, size", [("640", (640, 640)), ("640,512", (640, 512))])
def test_parse_image_size(text, size):
    assert config_lib.parse_image_size(text) == size


@pytest.mark.parametrize("text", ["640x512", "1,2,3", ""])
def test_parse_image_size_errors(text):
    with pytest.raises(ValueError, match="--image_size"):
        config_lib.parse_image_size(text)


def test_parse_overrides():
    assert config_lib.parse_overrides(["filter_size_scale=0.25", "activation=relu", "use_sync_bn=true"]) == {
        "filter_size_scale": 0.25, "activation": "relu", "use_sync_bn": True}
    with pytest.raises(ValueError, match="--model_overrides='oops': expected key=value"):
        config_lib.parse_overrides(["oops"])
