"""A task model from its description alone: `ModelConfig` (the model part of a run's `train_config.json`) and
`build_model`, which builds the Keras model it describes without any data pipeline.

Training (`spinenet_tf.training`) builds its model through this, and so do the exporter and anything else that
restores a `model_dir` (`spinenet_tf.checkpoints`), so a checkpoint always meets the network it was written from.
`train_config.json` is written by `spinenet_tf.training.config.TrainConfig.save`; this module reads only its model
fields, so reading it needs no training code.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

import keras
import tensorflow as tf

import spinenet_tf

TASKS = ("detection", "instance_segmentation", "classification")
CONFIG_FILE = "train_config.json"
# Fields that define the network: a resumed run must agree on them, `build_model` builds from them.
MODEL_FIELDS = ("task", "model", "image_size", "num_classes", "model_overrides")


def loss_weight_decay(optimizer: str, weight_decay: float) -> float:
    """The L2 term a model adds to its loss for an optimizer: SGD's weight decay (Model Garden's `l2(wd / 2)`
    kernel regularizers); none for AdamW, whose decay the optimizer applies, decoupled from the loss."""
    return float(weight_decay) if optimizer == "sgd" else 0.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What `build_model` needs.

    Attributes:
        task: One of `TASKS`.
        model: A registry name (`spinenet_tf.list_models("detector")` / `("classifier")`, or a backbone name for
            a classifier).
        image_size: (H, W).
        num_classes: Head classes (for Mask R-CNN including the background class 0).
        model_overrides: Keyword overrides for `build_detector` / `build_classifier`.
        weight_decay: Detectors: the L2 term of the model's own loss (`loss_weight_decay`); None keeps the
            registry row's. Classifiers take no weight decay (the training task adds theirs).
    """

    task: str
    model: str
    image_size: tuple[int, int]
    num_classes: int
    model_overrides: Mapping = dataclasses.field(default_factory=dict)
    weight_decay: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping) -> ModelConfig:
        """The model part of a train config's JSON (`TrainConfig.to_json`); other fields are ignored."""
        optimizer = data.get("optimizer") or {}
        weight_decay = (loss_weight_decay(optimizer["optimizer"], optimizer["weight_decay"])
                        if "optimizer" in optimizer and "weight_decay" in optimizer else None)
        return cls(task=data["task"], model=data["model"], image_size=tuple(data["image_size"]),
                   num_classes=int(data.get("num_classes", 0)), model_overrides=dict(data.get("model_overrides", {})),
                   weight_decay=weight_decay)

    @classmethod
    def load(cls, model_dir: str) -> ModelConfig:
        """The model a training run saved in `model_dir`; FileNotFoundError names the file if absent."""
        return cls.from_dict(read_config_file(model_dir))


def read_config_file(model_dir: str) -> dict:
    """The JSON of `model_dir/train_config.json`.

    Raises:
        FileNotFoundError: One line naming the file, when `model_dir` holds none.
    """
    path = os.path.join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):  # any tf.io.gfile path: gs:// too, where TensorFlow reads GCS
        raise FileNotFoundError(f"{path}: no training config (is {model_dir} a training --model_dir?)")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def build_model(config: ModelConfig) -> keras.Model:
    """The Keras model `config` describes, built with fresh weights.

    Raises:
        ValueError: `num_classes` is 0 (a saved config always has it), an unknown task, or whatever
            `build_detector` / `build_classifier` reject (name, size, overrides).
    """
    if not config.num_classes:
        raise ValueError(f"build_model: {config.model}: num_classes is 0; use the config saved in the model_dir")
    if config.task in ("detection", "instance_segmentation"):
        overrides = dict(config.model_overrides)
        if config.weight_decay is not None:
            overrides = {"weight_decay": config.weight_decay, **overrides}
        return spinenet_tf.build_detector(config.model, config.num_classes, config.image_size, **overrides)
    if config.task == "classification":
        return spinenet_tf.build_classifier(config.model, config.num_classes, config.image_size,
                                            **config.model_overrides)
    raise ValueError(f"--task={config.task!r}: must be one of {', '.join(TASKS)}")
