"""InstanceSegmentationTask: Mask R-CNN from builtin:shapes through the task's four calls, and the training CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import testing
from spinenet_tf import registry
from spinenet_tf.detection.maskrcnn.model import MaskRCNN
from spinenet_tf.training import config as config_lib
from spinenet_tf.training import loop, tasks

# SpineNet-49S shrunk, narrow heads, 64 proposals, 8 detections (as tests/detection/maskrcnn/model_test.py's TINY).
TINY = dict(filter_size_scale=0.25, endpoints_num_filters=16, rpn_num_filters=16, box_num_convs=1,
            box_num_filters=8, box_fc_dims=32, mask_num_convs=1, mask_num_filters=8, rpn_num_proposals=64,
            max_detections=8, score_threshold=0.0)
TINY_FLAG = "--model_overrides=" + ",".join(f"{k}={v}" for k, v in TINY.items())


def _config(tmp_path, **changes) -> config_lib.TrainConfig:
    fields = dict(task="instance_segmentation", model="maskrcnn-spinenet-49s", model_dir=str(tmp_path),
                  image_size=(128, 128), model_overrides=TINY, batch_size=2, eval_batch_size=2,
                  input=config_lib.InputConfig(train_data="builtin:shapes:train[:4]",
                                               eval_data="builtin:shapes:validation[:2]", shuffle_buffer=4))
    return config_lib.TrainConfig(**{**fields, **changes}).validate()


def test_config_takes_mask_rcnn_names_only(tmp_path):
    assert "instance_segmentation" in config_lib.TASKS
    _config(tmp_path)
    with pytest.raises(ValueError, match="--model='retinanet-spinenet-49s': not a instance_segmentation model"):
        _config(tmp_path, model="retinanet-spinenet-49s")
    with pytest.raises(ValueError, match="not a detection model; valid names: retinanet"):
        _config(tmp_path, task="detection")
    for name in registry.MASKRCNN_DETECTORS:
        _config(tmp_path, model=name)


def test_task_builds_trains_and_evaluates_box_and_mask_ap(tmp_path):
    task = tasks.make_task(_config(tmp_path))
    assert isinstance(task, tasks.InstanceSegmentationTask)
    num_classes = task.num_classes()
    assert num_classes == 7  # builtin:shapes has 6 classes, + the background
    model = task.build_model(num_classes)
    assert isinstance(model, MaskRCNN) and model.num_classes == 7
    images, labels = next(iter(task.train_dataset()))
    assert tuple(images.shape) == (2, 128, 128, 3)
    assert tuple(labels["gt_masks"].shape[2:]) == (112, 112)
    classes = labels["gt_classes"].numpy()
    assert classes.max() <= 6 and classes[classes >= 0].min() >= 1  # shifted past the background
    terms = task.losses(model, images, labels, training=False)
    assert set(terms) == {"loss", "rpn_score_loss", "rpn_box_loss", "frcnn_cls_loss", "frcnn_box_loss", "mask_loss",
                          "l2_loss"}
    assert np.isfinite(float(terms["loss"])) and float(terms["loss"]) > 0
    metrics = task.evaluate(model, task.eval_dataset())
    assert metrics["num_images"] == 2
    for name in ("AP", "AP50", "mask_AP", "mask_AP50"):
        assert 0.0 <= metrics[name] <= 1.0, name


@pytest.mark.slow  # tracing the whole Mask R-CNN step takes a minute or two on 2 cores
def test_cli_trains_and_evaluates_instance_segmentation(tmp_path):
    model_dir = str(tmp_path / "run")
    testing.run_train("--task=instance_segmentation", "--model=maskrcnn-spinenet-49s", "--image_size=128",
                      TINY_FLAG, "--train_data=builtin:shapes:train[:4]", "--eval_data=builtin:shapes:validation[:2]",
                      "--shuffle_buffer=4", "--batch_size=2", "--eval_batch_size=2", "--train_steps=2",
                      "--checkpoint_steps=2", "--optimizer=sgd", "--learning_rate=0.01", "--lr_schedule=constant",
                      "--log_steps=1", f"--model_dir={model_dir}", "--noprogress_bar")
    records = json.load(open(os.path.join(model_dir, loop.EVAL_METRICS_FILE)))
    assert records[-1]["step"] == 2 and records[-1]["num_images"] == 2
    assert 0.0 <= records[-1]["mask_AP"] <= 1.0
    assert config_lib.TrainConfig.load(model_dir).num_classes == 7
