"""Checkpoints of a training `model_dir`: where they are, restoring a model's weights from one, writing them.

Layout (written by `spinenet_tf.training.loop`): `model_dir/checkpoints/ckpt-N`, a `tf.train.CheckpointManager`
over `model=` (the Keras model) and `optimizer=`, N the optimizer step; in a multi-worker run the other workers
write theirs under `model_dir/workers/worker-<i>/checkpoints/` (saving is collective) and only the chief's count.
Every reading function raises a one-line ValueError naming the checkpoint when there is none or it does not fit.

Initial weights for a fresh run (`--init_checkpoint`, `find_init_checkpoint` + `initialize`) come from another run
of ours or from a Model Garden TF2 checkpoint, told apart by the checkpoint's object graph: our Keras 3 models track
their layers as `_operations/<i>`, Model Garden's tf_keras functional backbones as `layer_with_weights-<i>`. Ours
are rebuilt from the run's `train_config.json` and copied variable by variable by Keras variable path; Model
Garden's go through `spinenet_tf.convert`. `modules` follows Model Garden's `init_checkpoint_modules`
(official/vision/configs/retinanet.py, official/vision/tasks/retinanet.py `initialize`): "all" or "backbone".
Paths are read with `tf.io.gfile`, so `gs://` works where TensorFlow has GCS.
"""

from __future__ import annotations

import dataclasses
import gc
import os

import keras
import tensorflow as tf
from absl import logging

from spinenet_tf import convert, models
from spinenet_tf.classification import Classifier
from spinenet_tf.detection.maskrcnn.model import MaskRCNN
from spinenet_tf.detection.retinanet import RetinaNet

CHECKPOINT_DIR = "checkpoints"
INIT_MODULES = ("all", "backbone")
SPINENET_TF, MODEL_GARDEN = "spinenet_tf", "Model Garden"


def checkpoint_dir(model_dir: str, task_id: int | None = None) -> str:
    """Where a run's checkpoints go: the chief's (`task_id` None), or those of multi-worker worker `task_id`."""
    if task_id is None:
        return os.path.join(model_dir, CHECKPOINT_DIR)
    return os.path.join(model_dir, "workers", f"worker-{task_id}", CHECKPOINT_DIR)


def model_dir_of(checkpoint: str) -> str:
    """The `model_dir` of a checkpoint path `model_dir/checkpoints/ckpt-N` (two levels up; a URL such as
    gs://bucket/run/checkpoints/ckpt-N stays one)."""
    return os.path.dirname(os.path.dirname(checkpoint if "://" in checkpoint else os.path.abspath(checkpoint)))


def latest_checkpoint(model_dir: str) -> str | None:
    """The newest checkpoint of the run in `model_dir`, or None."""
    return tf.train.latest_checkpoint(checkpoint_dir(model_dir))


def find_checkpoint(model_dir: str | None = None, checkpoint: str | None = None) -> str:
    """`checkpoint` if given, else the latest in `model_dir`, after checking that it exists.

    Raises:
        ValueError: one line: no checkpoint in `model_dir`, or `checkpoint` is not one (no `.index` file).
    """
    path = checkpoint or (latest_checkpoint(model_dir) if model_dir else None)
    if not path:
        raise ValueError(f"{model_dir}: no checkpoint in {checkpoint_dir(model_dir or '')}")
    if not tf.io.gfile.exists(path + ".index"):
        raise ValueError(f"{path}: not a checkpoint (no {os.path.basename(path)}.index)")
    return path


def restore(checkpoint: tf.train.Checkpoint, path: str, what: str, partial: bool = False) -> None:
    """Restores the objects `checkpoint` holds from `path`; every object that exists must be matched.

    Args:
        checkpoint: A `tf.train.Checkpoint` of the objects to restore (e.g. `model=` only, or `model=` and
            `optimizer=`), laid out as the training loop writes them.
        path: The checkpoint.
        what: Names the objects in the error ("retinanet_spinenet_49").
        partial: Values in the file that nothing here takes are fine (e.g. the optimizer's, restoring a model).

    Raises:
        ValueError: "{path}: does not match {what}: {first line of TensorFlow's error}".
    """
    try:
        # A variable that already exists is restored inside restore() itself, so a shape mismatch raises there.
        status = checkpoint.restore(path)
        if partial:
            status = status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as error:
        raise ValueError(f"{path}: does not match {what}: {str(error).splitlines()[0]}") from None


def restore_model(model: keras.Model, model_dir: str | None = None, checkpoint: str | None = None) -> str:
    """Loads the model weights of a training checkpoint into `model` (optimizer state is ignored); returns the path.

    Args:
        model: A built model of the run's config (`spinenet_tf.models.build_model`).
        model_dir: A training `model_dir`; its latest checkpoint is used.
        checkpoint: A checkpoint path instead.

    Raises:
        ValueError: one line naming the checkpoint if there is none, or if it does not fit the model.
    """
    path = find_checkpoint(model_dir, checkpoint)
    restore(tf.train.Checkpoint(model=model), path, model.name, partial=True)
    logging.info("restored the weights of %s from %s", model.name, path)
    return path


def manager(checkpoint: tf.train.Checkpoint, model_dir: str, max_to_keep: int,
            task_id: int | None = None) -> tf.train.CheckpointManager:
    """The `tf.train.CheckpointManager` that writes `checkpoint` into the layout above (the chief's directory for
    `task_id` None, else worker `task_id`'s), keeping the last `max_to_keep`."""
    return tf.train.CheckpointManager(checkpoint, checkpoint_dir(model_dir, task_id), max_to_keep)


def save(checkpoint_manager: tf.train.CheckpointManager, step: int) -> str:
    """Writes `ckpt-<step>`; returns its path."""
    path = checkpoint_manager.save(checkpoint_number=step)
    logging.info("saved %s", path)
    return path


# === Initial weights of a fresh run (--init_checkpoint) ===
@dataclasses.dataclass(frozen=True)
class InitCheckpoint:
    """A checkpoint to initialise a model from (`find_init_checkpoint`).

    Attributes:
        path: The checkpoint prefix (`.../ckpt-N`).
        source: `SPINENET_TF` (a training run of ours) or `MODEL_GARDEN`.
        config: Ours: the model the checkpoint was written from (its run's `train_config.json`); else None.
    """

    path: str
    source: str
    config: models.ModelConfig | None = None


def find_init_checkpoint(path: str) -> InitCheckpoint:
    """Finds and identifies a checkpoint to initialise from, without building or loading anything.

    Args:
        path: Our `model_dir` (its latest checkpoint), one of its checkpoints (`.../checkpoints/ckpt-N`), a Model
            Garden checkpoint prefix, or a directory of Model Garden checkpoints (the latest); any `tf.io.gfile`
            path.

    Raises:
        ValueError: one line naming `path`: it does not exist, holds no checkpoint, is not readable, is neither
            ours nor Model Garden's (no SpineNet backbone), or is ours without its run's train_config.json.
    """
    if tf.io.gfile.isdir(path):
        if tf.io.gfile.exists(os.path.join(path, models.CONFIG_FILE)):
            checkpoint = latest_checkpoint(path)
            if checkpoint is None:
                raise ValueError(f"{path}: a training --model_dir without a checkpoint in {checkpoint_dir(path)}")
        else:
            checkpoint = tf.train.latest_checkpoint(path)
            if checkpoint is None:
                raise ValueError(f"{path}: no checkpoint in this directory")
    elif tf.io.gfile.exists(path + ".index"):
        checkpoint = path
    else:
        raise ValueError(f"{path}: no such checkpoint or directory")
    try:
        keys = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as error:
        first = getattr(error, "message", str(error)).splitlines()[0]
        raise ValueError(f"{checkpoint}: not a readable TensorFlow checkpoint ({first})") from None
    if any("layer_with_weights-" in key for key in keys):  # tf_keras functional models: Model Garden's backbones
        return InitCheckpoint(checkpoint, MODEL_GARDEN)
    if not any(key.startswith("model/backbone/_operations/") for key in keys):  # a Keras 3 model of ours
        raise ValueError(f"{checkpoint}: holds no SpineNet backbone (neither a spinenet_tf training checkpoint nor a "
                         f"Model Garden one)")
    model_dir = model_dir_of(checkpoint)
    try:
        config = models.ModelConfig.load(model_dir)
    except FileNotFoundError as error:
        raise ValueError(f"{checkpoint}: a spinenet_tf checkpoint needs its run's {models.CONFIG_FILE} two levels up "
                         f"({error})") from None
    return InitCheckpoint(checkpoint, SPINENET_TF, config)


def initialize(model: keras.Model, init: InitCheckpoint | str, modules: str = "all") -> str:
    """Loads initial weights into a freshly built model (fine-tuning); logs and returns one line saying what was
    restored and what was not, and why.

    Args:
        model: A `RetinaNet`, `MaskRCNN` or `Classifier` of ours.
        init: `find_init_checkpoint`'s result, or a path for it.
        modules: "all": every weight, except that the class-prediction layers (`convert.class_prediction_layers`)
            stay as initialised when the checkpoint's class count differs from `model`'s; the checkpoint must be of
            the same kind of model (a detector's for a detector, ...). "backbone": the backbone only, from any
            checkpoint holding one (e.g. a classifier's into a detector, or a Model Garden backbone checkpoint).

    Raises:
        ValueError: one line naming the checkpoint and the first layer that does not fit, or a checkpoint of
            another kind of model with modules="all".
    """
    if modules not in INIT_MODULES:
        raise ValueError(f"init_checkpoint_modules={modules!r}: must be one of {', '.join(INIT_MODULES)}")
    if isinstance(init, str):
        init = find_init_checkpoint(init)
    target = model.backbone if modules == "backbone" else model
    class_layers = [] if modules == "backbone" else convert.class_prediction_layers(model)
    if init.source == MODEL_GARDEN:
        try:
            loaded = convert.load_model_garden_checkpoint(init.path, target, num_classes_may_differ=True)
        except convert.HeadlessCheckpointError as error:
            raise ValueError(f"{error.problem}; use init_checkpoint_modules=backbone") from None
        skipped = class_layers if loaded < len(target.weights) else []  # all or none: each depends on the classes
        why = f"the checkpoint's class count is not this model's {model.num_classes}"
    else:
        check_init_task(init, model_task(model), modules)
        source = models.build_model(init.config)
        restore(tf.train.Checkpoint(model=source), init.path, source.name, partial=True)
        loaded, skipped = _copy_weights(source.backbone if modules == "backbone" else source, target, class_layers,
                                        f"{init.path} ({init.config.model})")
        why = f"the checkpoint has {init.config.num_classes} classes, this model {model.num_classes}"
        del source
        gc.collect()
    not_restored = []
    if skipped:
        count = sum(len(layer.weights) for layer in skipped)
        names = ", ".join(_layer_path(layer.weights[0].path) for layer in skipped)
        not_restored.append(f"{names} ({count} weights, re-initialised: {why})")
    if modules == "backbone":
        not_restored.append(f"everything outside the backbone ({len(model.weights) - loaded} weights, "
                            f"init_checkpoint_modules=backbone)")
    line = (f"initialised {model.name} from {init.source} checkpoint {init.path} (init_checkpoint_modules={modules}): "
            f"restored {loaded} of {len(model.weights)} weights; not restored: {'; '.join(not_restored) or 'none'}")
    logging.info("%s", line)
    return line


def model_task(model: keras.Model) -> str:
    """The training task of one of our models ("detection", "instance_segmentation" or "classification")."""
    for cls, task in ((MaskRCNN, "instance_segmentation"), (RetinaNet, "detection"), (Classifier, "classification")):
        if isinstance(model, cls):
            return task
    raise TypeError(f"{type(model).__name__}: not a spinenet_tf RetinaNet, MaskRCNN or Classifier")


def check_init_task(init: InitCheckpoint, task: str, modules: str) -> None:
    """Raises a one-line ValueError when `modules="all"` would fill a `task` model from a checkpoint of our run of
    another task (a Mask R-CNN's into a RetinaNet, ...). Cheap: reads no weights."""
    if init.config is not None and modules == "all" and init.config.task != task:
        raise ValueError(f"{init.path}: a --task={init.config.task} checkpoint ({init.config.model}) cannot fill every "
                         f"layer of a --task={task} model; use init_checkpoint_modules=backbone")


def _layer_path(variable_path: str) -> str:
    return variable_path.rpartition("/")[0]


def _copy_weights(source: keras.layers.Layer, target: keras.layers.Layer, class_layers: list, where: str):
    """Copies `source`'s weights into `target`'s variable by variable, matched by Keras variable path relative to
    each (a nested backbone's paths may carry its name); returns (the number copied, the skipped class layers).

    A layer of `class_layers` whose shapes differ from the checkpoint's is left as initialised; any other path or
    shape that does not match raises one line naming the first layer that does not fit.
    """
    def relative(variable, root) -> str:
        return variable.path.removeprefix(f"{root.name}/")

    ours = {relative(variable, target): variable for variable in target.weights}
    theirs = {relative(variable, source): variable for variable in source.weights}
    skipped = [layer for layer in class_layers
               if any(relative(variable, target) in theirs
                      and tuple(variable.shape) != tuple(theirs[relative(variable, target)].shape)
                      for variable in layer.weights)]
    skipped_paths = {relative(variable, target) for layer in skipped for variable in layer.weights}
    for path, variable in ours.items():
        if path not in theirs:
            raise ValueError(f"{where}: does not fit {target.name}: its layer {_layer_path(path)} has no counterpart "
                             f"in the checkpoint (no {path})")
        if tuple(variable.shape) != tuple(theirs[path].shape) and path not in skipped_paths:
            raise ValueError(f"{where}: does not fit {target.name}: layer {_layer_path(path)}: {path} has shape "
                             f"{tuple(theirs[path].shape)} in the checkpoint, {tuple(variable.shape)} here")
    extra = [path for path in theirs if path not in ours]
    if extra:
        raise ValueError(f"{where}: does not fit {target.name}: the checkpoint's layer {_layer_path(extra[0])} has "
                         f"no counterpart here")
    copied = 0
    for path, variable in ours.items():
        if path not in skipped_paths:
            variable.assign(theirs[path].numpy())
            copied += 1
    return copied, skipped
