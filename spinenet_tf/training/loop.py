"""The training loop: a `TrainConfig` in, checkpoints, TensorBoard logs and metrics in `model_dir` out.

A custom loop over `tf.distribute` (default, mirrored, multi-worker or TPU strategy, `training.strategy`), like
Model Garden's Orbit trainers, so that every step is ours to check:

- **Checkpoints** every `checkpoint_steps` (the last `keep_checkpoints` kept) and at the end, over the model and
  optimizer (step = `optimizer.iterations`; layout and restoring in `spinenet_tf.checkpoints`). Started again with
  the same command, a run resumes from its last checkpoint: same step count, same weights and optimizer slots. The
  data order is not part of a checkpoint; a resumed run reshuffles with a seed derived from its start step, so it
  does not replay the batches it already saw.
- **Non-finite loss** stops the run before anything is saved: the last good checkpoint stays the latest. So
  does an update that leaves a weight or optimizer slot non-finite after a finite loss (a huge learning rate
  overflows the momentum first): every float variable is checked before each save.
- **Initial weights** (`--init_checkpoint`, `--init_checkpoint_modules`; `spinenet_tf.checkpoints.initialize`) apply
  to a fresh run only: with a checkpoint in `model_dir` the run resumes from it and says the init is ignored. The
  checkpoint is checked (exists, fits the model) before anything is written to `model_dir`.
  `--freeze_backbone` sets `backbone.trainable = False` (Model Garden's `freeze_backbone`,
  official/vision/tasks/retinanet.py `build_model`): Keras 3 then runs its batch norms in inference mode, and the
  step, the L2 term and the optimizer see only the trainable (head) weights.
- **Multi-worker**: every worker runs the same steps; the chief writes `model_dir`, the others write their own
  checkpoints under `model_dir/workers/` (saving is collective), and every worker restores from the chief's.

`model_dir` layout: `train_config.json` (what `export` reads), `flags.txt` (a flagfile that reruns the experiment),
`checkpoints/ckpt-N`, `train/` and `eval/` TensorBoard logs, `eval_metrics.json` (one record per evaluation),
`train_times.json` (one record per checkpoint: the training seconds it took to reach it, `TrainTimes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from spinenet_tf import atomic_files, checkpoints
from spinenet_tf.layers import precise_bn
from spinenet_tf.training import optimizers, strategy as strategy_lib, tasks
from spinenet_tf.training.config import CONFIG_FILE, TrainConfig

EVAL_METRICS_FILE = "eval_metrics.json"
TRAIN_TIMES_FILE = "train_times.json"


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss, a config that does not match the checkpoint's)."""


def trained_model(config: TrainConfig) -> tuple[tasks.Task, keras.Model]:
    """The task (with its data sources) and model of a run in `config.model_dir`, with its latest weights."""
    task = tasks.make_task(config)
    model = task.build_model(config.num_classes)
    checkpoints.restore_model(model, config.model_dir)
    return task, model


class TrainTimes:
    """`model_dir/train_times.json`: for every checkpoint, the wall-clock seconds of training it took to reach it.

    One record per checkpoint `ckpt-N`, `{"step": N, "train_seconds": s}`, written (atomically) just before the
    checkpoint, so a run killed in between resumes from an earlier checkpoint and drops the record. `train_seconds`
    counts from the start of `Trainer.train` (building the input pipeline, tracing, steps, batch-norm
    re-estimation, earlier saves) and leaves out evaluations run during training, process start-up and model
    building. A resumed run adds its seconds to those recorded for the checkpoint it resumed from, so the times are
    those of the whole run; if that record is missing (the file was deleted), its checkpoints get
    `"train_seconds": null`. A fresh run (step 0) starts a new file. Records outlive the checkpoints that
    `--keep_checkpoints` deletes: to evaluate every checkpoint afterwards (`bench/ap_vs_time.py`), keep them all.
    """

    def __init__(self, model_dir: str, start_step: int):
        self.path = os.path.join(model_dir, TRAIN_TIMES_FILE)
        records = read_train_times(model_dir) if start_step else []
        self.records = [record for record in records if record["step"] <= start_step]
        known = [record["train_seconds"] for record in self.records if record["step"] == start_step]
        self._base = known[0] if known else (0.0 if not start_step else None)
        if self._base is None:
            logging.warning("%s has no time for step %d: the times of this run's checkpoints are unknown (null)",
                            self.path, start_step)
        self._start, self._paused = time.perf_counter(), 0.0

    def seconds(self) -> float | None:
        """Training seconds so far (None when the resumed run's start is unknown)."""
        if self._base is None:
            return None
        return self._base + time.perf_counter() - self._start - self._paused

    @contextlib.contextmanager
    def paused(self):
        """Time spent inside the block does not count (evaluations)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - start

    def record(self, step: int) -> None:
        seconds = self.seconds()
        self.records.append({"step": step, "train_seconds": None if seconds is None else round(seconds, 2)})
        atomic_files.write_text(self.path, json.dumps(self.records, indent=2))


def read_train_times(model_dir: str) -> list[dict]:
    """The records of `model_dir/train_times.json` (`TrainTimes`), oldest first; [] when there is none."""
    path = os.path.join(model_dir, TRAIN_TIMES_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


# === The run ===
class Trainer:
    """One run of a `TrainConfig`: strategy, task, model, optimizer and checkpoints, set up in that order (bad
    settings fail before the model is built). `run()` drives it; benchmarks and tests use its parts."""

    def __init__(self, config: TrainConfig, flags_text: str | None):
        self.config = config
        self.strategy = strategy_lib.make_strategy(config.runtime)
        replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % replicas:
            raise ValueError(f"--batch_size={config.batch_size}: not divisible by the {replicas} replicas of "
                             f"--strategy={config.runtime.strategy}")
        self.is_chief, self.task_id = strategy_lib.worker_role(self.strategy)
        self.task = tasks.make_task(config)  # parses the data flags: bad paths fail here, before any work
        saved_path = os.path.join(config.model_dir, CONFIG_FILE)
        resume_from = checkpoints.latest_checkpoint(config.model_dir)
        if os.path.exists(saved_path):
            saved = TrainConfig.load(config.model_dir)
            if not config.num_classes:
                config = dataclasses.replace(config, num_classes=saved.num_classes)
            differences = saved.model_differences(config)
            if differences:
                raise TrainingError(f"{saved_path}: this run's model differs from the saved one "
                                    f"({'; '.join(differences)}); use another --model_dir")
            if saved.freeze_backbone != config.freeze_backbone and resume_from:
                # The optimizer's slots are those of the trainable weights: its checkpoint fits one setting only.
                raise TrainingError(f"--freeze_backbone={config.freeze_backbone}: the run in {config.model_dir} was "
                                    f"started with --freeze_backbone={saved.freeze_backbone}; resume with that, or use "
                                    f"another --model_dir")
        elif not config.num_classes:
            config = dataclasses.replace(config, num_classes=self.task.num_classes())
        self.config = self.task.config = config
        # --init_checkpoint: found and identified now (a bad path fails before any work), loaded once the model exists.
        init = None
        if config.init_checkpoint and config.mode != "eval":
            if resume_from:
                logging.info("resuming from %s: --init_checkpoint=%s is ignored (it only starts a fresh run)",
                             resume_from, config.init_checkpoint)
            else:
                init = _flag_error("--init_checkpoint", checkpoints.find_init_checkpoint, config.init_checkpoint)
                _flag_error("--init_checkpoint", checkpoints.check_init_task, init, config.task,
                            config.init_checkpoint_modules)
        if config.runtime.mixed_precision != "none":
            keras.mixed_precision.set_global_policy(f"mixed_{config.runtime.mixed_precision}")
        with self.strategy.scope():
            self.model = self.task.build_model(config.num_classes)
            if config.freeze_backbone:
                self.model.backbone.trainable = False
        if init is not None:
            _flag_error("--init_checkpoint", checkpoints.initialize, self.model, init, config.init_checkpoint_modules)
        # Only now, with every flag and the initial weights checked, does the run write to model_dir.
        if self.is_chief and config.mode != "eval":
            config.save()
            if flags_text is not None:
                atomic_files.write_text(os.path.join(config.model_dir, "flags.txt"), flags_text)
        with self.strategy.scope():
            self.optimizer = optimizers.build_optimizer(config.optimizer, config.train_steps,
                                                        config.runtime.mixed_precision)
            self.optimizer.build(self.model.trainable_variables)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        self.manager = checkpoints.manager(self.checkpoint, config.model_dir, config.runtime.keep_checkpoints,
                                           task_id=None if self.is_chief else self.task_id)
        self.chief_dir = checkpoints.checkpoint_dir(config.model_dir)

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore(self) -> str | None:
        """Resumes from the chief's latest checkpoint (model and optimizer), if any; returns its path."""
        path = checkpoints.latest_checkpoint(self.config.model_dir)
        if path:
            try:
                checkpoints.restore(self.checkpoint, path, f"{self.model.name} and its optimizer")
            except ValueError as error:
                raise TrainingError(f"{error}; use another --model_dir") from None
            logging.info("restored %s (step %d)", path, self.step)
        return path

    def save(self) -> None:
        checkpoints.save(self.manager, self.step)

    def _stopped(self, reason: str) -> TrainingError:
        """The one-line error of a run stopped before saving: `reason`, then the checkpoint that stays the latest."""
        kept = checkpoints.latest_checkpoint(self.config.model_dir) or "none"
        return TrainingError(f"{reason} training stopped, nothing saved; the last good checkpoint is {kept}")

    def first_non_finite_variable(self) -> str | None:
        """The path of the first model or optimizer float variable holding a NaN or infinity, or None.

        Read eagerly, one variable at a time: for the demo's RetinaNet with AdamW (1,935 variables) 1.2-1.4 s on a
        loaded 2-core CPU, where a `tf.function` over all of them took 40 s to trace and optimise at the first
        checkpoint of every run."""
        for variable in (*self.model.variables, *self.optimizer.variables):
            if tf.as_dtype(variable.dtype).is_floating and not np.isfinite(variable.numpy()).all():
                return variable.path
        return None

    # === Evaluation ===
    def evaluate(self) -> dict:
        if not self.is_chief:
            return {}
        input_config = self.config.input
        logging.info("evaluating step %d on %s%s ...", self.step, input_config.eval_data,
                     f" (first {input_config.num_eval_examples} examples)" if input_config.num_eval_examples else "")
        start = time.time()
        metrics = self.task.evaluate(self.model, self.task.eval_dataset())
        metrics = {"step": self.step, **metrics, "eval_seconds": round(time.time() - start, 1)}
        stats = self.task.eval_stats
        if stats is not None:
            metrics["data"] = stats.as_dict()
        writer = tf.summary.create_file_writer(os.path.join(self.config.model_dir, "eval"))
        with writer.as_default():
            for name, value in metrics.items():
                if isinstance(value, float):
                    tf.summary.scalar(name, value, step=self.step)
        writer.close()
        path = os.path.join(self.config.model_dir, EVAL_METRICS_FILE)
        records = json.load(open(path)) if os.path.exists(path) else []
        atomic_files.write_text(path, json.dumps(records + [metrics], indent=2))
        return metrics

    # === Training ===
    def train_function(self):
        strategy, task, model, optimizer = self.strategy, self.task, self.model, self.optimizer
        replicas = strategy.num_replicas_in_sync

        def step_fn(images, labels):
            with tf.GradientTape() as tape:
                terms = task.losses(model, images, labels, training=True)
                # Gradients are summed over replicas (Keras' all-reduce), so each replica's loss is divided.
                scaled = optimizer.scale_loss(terms["loss"] / replicas)
            gradients = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return terms

        @tf.function
        def train_step(iterator):
            images, labels = next(iterator)
            terms = strategy.run(step_fn, args=(images, labels))
            return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                    for name, value in terms.items()}

        return train_step

    def reestimate_batch_norm(self) -> int:
        """Precise batch norm on `config.precise_bn_batches` fresh training batches (augmented, as in training)."""
        logging.info("re-estimating batch-norm statistics on %d training batches ...", self.config.precise_bn_batches)
        start = time.time()
        images = (images for images, _ in self.task.train_dataset())
        used = precise_bn.reestimate(self.model, images, self.config.precise_bn_batches)
        logging.info("batch-norm statistics re-estimated on %d batches in %.1f s", used, time.time() - start)
        return used

    def train(self) -> None:
        config, runtime = self.config, self.config.runtime
        start_step = self.step
        if start_step >= config.train_steps:
            logging.info("step %d: --train_steps=%d already reached", start_step, config.train_steps)
            return
        clock = TrainTimes(config.model_dir, start_step) if self.is_chief else None
        # A resumed run reshuffles with a seed of its start step, so it does not repeat the batches it saw.
        self.task.config = dataclasses.replace(config, runtime=dataclasses.replace(
            runtime, seed=runtime.seed + start_step))
        dataset = self.strategy.distribute_datasets_from_function(self.task.train_dataset)
        iterator = iter(dataset)
        train_step = self.train_function()
        writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "train")) if self.is_chief \
            else tf.summary.create_noop_writer()
        progress = keras.utils.Progbar(config.train_steps, stateful_metrics=["loss"]) \
            if runtime.show_progress_bar() and self.is_chief else None
        totals, count, window_start = {}, 0, time.time()
        logging.info("training %s from step %d to %d, global batch %d on %d replica(s)", config.model, start_step,
                     config.train_steps, config.batch_size, self.strategy.num_replicas_in_sync)
        for step in range(start_step + 1, config.train_steps + 1):
            terms = {name: float(value) for name, value in train_step(iterator).items()}
            if not math.isfinite(terms["loss"]):
                raise self._stopped(f"loss is {terms['loss']} at step {step}:")
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + value
            count += 1
            if progress is not None:
                progress.update(step, values=[("loss", terms["loss"])])
            if step % runtime.log_steps == 0 or step == config.train_steps:
                seconds = time.time() - window_start
                means = {name: total / count for name, total in totals.items()}
                learning_rate = float(self.optimizer.learning_rate)
                images_per_second = count * config.batch_size / max(seconds, 1e-9)
                logging.info("step %d/%d: %s, lr %.3g, %.1f images/s", step, config.train_steps,
                             ", ".join(f"{k} {v:.4f}" for k, v in means.items()), learning_rate, images_per_second)
                with writer.as_default():
                    for name, value in means.items():
                        tf.summary.scalar(name, value, step=step)
                    tf.summary.scalar("learning_rate", learning_rate, step=step)
                    tf.summary.scalar("images_per_second", images_per_second, step=step)
                totals, count, window_start = {}, 0, time.time()
            if step == config.train_steps and config.precise_bn_batches:
                self.reestimate_batch_norm()
            if step % runtime.checkpoint_steps == 0 or step == config.train_steps:
                bad = self.first_non_finite_variable()
                if bad is not None:
                    raise self._stopped(f"{bad} is not finite after the update at step {step}: loss "
                                        f"{terms['loss']:.4g},")
                if clock is not None:
                    clock.record(step)
                self.save()
                stats = self.task.train_stats
                if stats is not None and stats.summary():
                    logging.info("training data: %s", stats.summary())
            if (config.mode == "train_and_eval" and runtime.eval_interval and step % runtime.eval_interval == 0
                    and step != config.train_steps):
                with clock.paused() if clock is not None else contextlib.nullcontext():
                    self.evaluate()
        writer.close()


def _flag_error(flag: str, function, *args):
    """`function(*args)`, its one-line ValueError prefixed with the flag it is about."""
    try:
        return function(*args)
    except ValueError as error:
        raise ValueError(f"{flag}: {error}") from None


def run(config: TrainConfig, flags_text: str | None = None) -> dict:
    """Trains and/or evaluates as `config.mode` says; returns the last evaluation's metrics ({} if none).

    Raises:
        ValueError: a bad setting, naming its flag (before any work).
        TrainingError: a non-finite loss, or a config that does not match the checkpoints in model_dir.
    """
    config.validate()
    keras.utils.set_random_seed(config.runtime.seed)
    trainer = Trainer(config, flags_text)
    restored = trainer.restore()
    if config.mode == "eval":
        if not restored:
            raise ValueError(f"--mode=eval: no checkpoint in {trainer.chief_dir}")
        return trainer.evaluate()
    trainer.train()
    return trainer.evaluate() if config.mode == "train_and_eval" else {}

