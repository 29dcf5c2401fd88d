"""Checkpoints of a training `model_dir`: where they are, restoring a model's weights from one, writing them.

Layout (written by `spinenet_tf.training.loop`): `model_dir/checkpoints/ckpt-N`, a `tf.train.CheckpointManager`
over `model=` (the Keras model) and `optimizer=`, N the optimizer step; in a multi-worker run the other workers
write theirs under `model_dir/workers/worker-<i>/checkpoints/` (saving is collective) and only the chief's count.
Every reading function raises a one-line ValueError naming the checkpoint when there is none or it does not fit.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf
from absl import logging

CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(model_dir: str, task_id: int | None = None) -> str:
    """Where a run's checkpoints go: the chief's (`task_id` None), or those of multi-worker worker `task_id`."""
    if task_id is None:
        return os.path.join(model_dir, CHECKPOINT_DIR)
    return os.path.join(model_dir, "workers", f"worker-{task_id}", CHECKPOINT_DIR)


def model_dir_of(checkpoint: str) -> str:
    """The `model_dir` of a checkpoint path `model_dir/checkpoints/ckpt-N` (two levels up)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(checkpoint)))


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
