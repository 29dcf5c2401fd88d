"""Trains and evaluates SpineNet detectors and classifiers.

    python -m spinenet_tf.train --flagfile=configs/detection_retinanet_spinenet_49_coco640.flags \
        --model_dir=runs/spinenet49 [--flag=value ...]

Flags after --flagfile override it. Data sources: builtin:shapes[:split], tfds:NAME[:split],
coco:ANNOTATIONS.json:IMAGE_DIR, tfrecord:GLOB. Started again with the same command, a run resumes from the last
checkpoint in --model_dir. Fine-tuning: --init_checkpoint=PATH (a run of ours or a Model Garden checkpoint) with
--init_checkpoint_modules=all|backbone and --freeze_backbone. All logic lives in `spinenet_tf.training`; this module
only reads flags.
"""

from __future__ import annotations

import os

import tensorflow as tf
from absl import flags

from spinenet_tf import cli
from spinenet_tf.training import config as config_lib
from spinenet_tf.training import loop

# === Task, model, data ===
_TASK = flags.DEFINE_enum("task", None, list(config_lib.TASKS), "What to train.")
_MODEL = flags.DEFINE_string("model", None, "A name from spinenet_tf.list_models('detector') or ('classifier').")
_IMAGE_SIZE = flags.DEFINE_string("image_size", "640", "Input size H or H,W; each divisible by 2**max_level (128).")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 0, "Head classes; 0 = the training data's class count.")
_MODEL_OVERRIDES = flags.DEFINE_list("model_overrides", [], "key=value overrides for build_detector / "
                                     "build_classifier, e.g. filter_size_scale=0.5,num_filters=64.")
_BLOCK_SPECS = flags.DEFINE_string("block_specs", None, "A block-spec file (JSON: the scale-permuted table and its "
                                   "stem; a search's best.json is one; docs/search.md) replacing the model's table.")
_ACTIVATION = flags.DEFINE_enum("activation", None, ["relu", "swish", "hard_swish"],
                                "Backbone and head activation (default: the model's: swish, or relu for "
                                "retinanet-resnet50-fpn).")
_STOCHASTIC_DEPTH = flags.DEFINE_float("stochastic_depth_rate", None, "Backbone stochastic depth rate (paper: 0.2).")
_NORM_MOMENTUM = flags.DEFINE_float("norm_momentum", None, "Batch-norm moving-average momentum (MG: 0.99; 0.9 "
                                   "keeps up in short runs).")
_LABEL_SMOOTHING = flags.DEFINE_float("label_smoothing", None, "Classification label smoothing (paper: 0.1).")
_TRAIN_DATA = flags.DEFINE_string("train_data", None, "Training data source.")
_EVAL_DATA = flags.DEFINE_string("eval_data", None, "Evaluation data source.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir for tfds: sources.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Checkpoints, logs, metrics and train_config.json go here.")
_MODE = flags.DEFINE_enum("mode", "train_and_eval", list(config_lib.MODES),
                          "train, eval (the latest checkpoint), or train then eval.")
# === Fine-tuning ===
_INIT_CHECKPOINT = flags.DEFINE_string(
    "init_checkpoint", "", "Initial weights of a fresh run: a --model_dir of ours (or its checkpoints/ckpt-N), or a "
    "Model Garden TF2 checkpoint (RetinaNet, Mask R-CNN, classification model or backbone; a file prefix or a "
    "directory), told apart automatically; any tf.io.gfile path (gs://...). Ignored when --model_dir already has a "
    "checkpoint (the run resumes).")
_INIT_CHECKPOINT_MODULES = flags.DEFINE_enum(
    "init_checkpoint_modules", "all", list(config_lib.INIT_CHECKPOINT_MODULES),
    "all: every weight (a checkpoint of the same kind of model; the class layers are re-initialised when "
    "--num_classes differs from the checkpoint's); backbone: the backbone only (e.g. a classifier's into a "
    "detector).")
_FREEZE_BACKBONE = flags.DEFINE_bool("freeze_backbone", False, "Keep the backbone's weights and batch-norm "
                                     "statistics fixed; only the heads train.")
# === Input ===
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Global training batch (all replicas).")
_EVAL_BATCH_SIZE = flags.DEFINE_integer("eval_batch_size", 8, "Evaluation batch.")
_HORIZONTAL_FLIP = flags.DEFINE_bool("horizontal_flip", True, "Random horizontal flip in training.")
_AUG_SCALE_MIN = flags.DEFINE_float("aug_scale_min", 0.5, "Scale jitter minimum (paper: 0.5).")
_AUG_SCALE_MAX = flags.DEFINE_float("aug_scale_max", 2.0, "Scale jitter maximum (paper: 2.0).")
_MAX_INSTANCES = flags.DEFINE_integer("max_instances", 100, "Ground-truth boxes kept per image.")
_SHUFFLE_BUFFER = flags.DEFINE_integer("shuffle_buffer", 1000, "Examples in the shuffle buffer.")
_CACHE = flags.DEFINE_bool("cache", False, "Cache decoded training examples in memory (small datasets).")
_NUM_EVAL_EXAMPLES = flags.DEFINE_integer("num_eval_examples", 0, "Evaluate on this many examples (0 = all).")
# === Optimization ===
_OPTIMIZER = flags.DEFINE_enum("optimizer", "sgd", list(config_lib.OPTIMIZERS), "SGD with momentum, or AdamW.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.08, "Peak learning rate for the global batch (0 trains "
                                     "nothing).")
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 4e-5, "L2 (SGD, as MG's l2 regularizer) or decoupled (AdamW).")
_GRADIENT_CLIP_NORM = flags.DEFINE_float("gradient_clip_norm", 0.0, "Clip the global gradient norm (0 = off).")
# === Schedule ===
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 1000, "Optimizer steps in all.")
_PRECISE_BN_BATCHES = flags.DEFINE_integer("precise_bn_batches", 0, "After the last step, re-estimate batch-norm "
                                           "statistics on N training batches (0 = off; --strategy=default).")
_LR_SCHEDULE = flags.DEFINE_enum("lr_schedule", "step", list(config_lib.SCHEDULES),
                                 "After warm-up: step decay, cosine decay or constant.")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 0, "Linear warm-up steps.")
_WARMUP_LEARNING_RATE = flags.DEFINE_float("warmup_learning_rate", 0.0, "Learning rate at step 0 of the warm-up.")
_LR_DECAY_BOUNDARIES = flags.DEFINE_list("lr_decay_boundaries", ["0.95", "0.98"],
                                         "Step schedule: fractions of --train_steps where the rate drops.")
_LR_DECAY_FACTOR = flags.DEFINE_float("lr_decay_factor", 0.1, "Step schedule: factor at each boundary.")
_COSINE_ALPHA = flags.DEFINE_float("cosine_alpha", 0.0, "Cosine schedule: final rate / peak rate.")
# === Runtime ===
_STRATEGY = flags.DEFINE_enum("strategy", "default", list(config_lib.STRATEGIES),
                              "tf.distribute strategy; multi_worker reads TF_CONFIG.")
_TPU = flags.DEFINE_string("tpu", "", "--strategy=tpu: TPU name or grpc:// address ('' = local).")
_NUM_CPU_DEVICES = flags.DEFINE_integer("num_cpu_devices", 0, "Split the CPU into N logical devices (to run "
                                        "--strategy=mirrored on a CPU-only machine); 0 = leave as is.")
_MIXED_PRECISION = flags.DEFINE_enum("mixed_precision", "none", list(config_lib.MIXED_PRECISION),
                                     "Compute dtype: bfloat16 (TPU, recent CPUs) or float16 (GPU, loss scaling).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of weights and augmentation.")
_CHECKPOINT_STEPS = flags.DEFINE_integer("checkpoint_steps", 1000, "Save a checkpoint every N steps.")
_KEEP_CHECKPOINTS = flags.DEFINE_integer("keep_checkpoints", 5, "Checkpoints kept.")
_EVAL_INTERVAL = flags.DEFINE_integer("eval_interval", 0, "train_and_eval: evaluate every N steps (0 = at the end).")
_LOG_STEPS = flags.DEFINE_integer("log_steps", 100, "Log losses and speed every N steps.")
_PROGRESS_BAR = flags.DEFINE_bool("progress_bar", None, "Show a progress bar (default: when stdout is a terminal).")


def config_from_flags() -> config_lib.TrainConfig:
    """The only place that reads flags."""
    overrides = config_lib.parse_overrides(_MODEL_OVERRIDES.value)
    for key, holder in (("activation", _ACTIVATION), ("stochastic_depth_rate", _STOCHASTIC_DEPTH),
                        ("label_smoothing", _LABEL_SMOOTHING), ("norm_momentum", _NORM_MOMENTUM)):
        if holder.value is not None:
            overrides[key] = holder.value
    if _BLOCK_SPECS.value:
        overrides = config_lib.block_specs_override(_BLOCK_SPECS.value, _MODEL.value, overrides)
    try:
        boundaries = tuple(float(b) for b in _LR_DECAY_BOUNDARIES.value)
    except ValueError:
        raise ValueError(f"--lr_decay_boundaries={','.join(_LR_DECAY_BOUNDARIES.value)}: numbers") from None
    return config_lib.TrainConfig(
        task=_TASK.value, model=_MODEL.value, model_dir=_MODEL_DIR.value,
        image_size=config_lib.parse_image_size(_IMAGE_SIZE.value), num_classes=_NUM_CLASSES.value,
        model_overrides=overrides, mode=_MODE.value, batch_size=_BATCH_SIZE.value,
        eval_batch_size=_EVAL_BATCH_SIZE.value, train_steps=_TRAIN_STEPS.value,
        precise_bn_batches=_PRECISE_BN_BATCHES.value, init_checkpoint=_INIT_CHECKPOINT.value,
        init_checkpoint_modules=_INIT_CHECKPOINT_MODULES.value, freeze_backbone=_FREEZE_BACKBONE.value,
        input=config_lib.InputConfig(
            train_data=_TRAIN_DATA.value, eval_data=_EVAL_DATA.value, tfds_data_dir=_TFDS_DATA_DIR.value,
            horizontal_flip=_HORIZONTAL_FLIP.value, aug_scale_min=_AUG_SCALE_MIN.value,
            aug_scale_max=_AUG_SCALE_MAX.value, max_instances=_MAX_INSTANCES.value,
            shuffle_buffer=_SHUFFLE_BUFFER.value, cache=_CACHE.value, num_eval_examples=_NUM_EVAL_EXAMPLES.value),
        optimizer=config_lib.OptimizerConfig(
            optimizer=_OPTIMIZER.value, learning_rate=_LEARNING_RATE.value, momentum=_MOMENTUM.value,
            weight_decay=_WEIGHT_DECAY.value, gradient_clip_norm=_GRADIENT_CLIP_NORM.value,
            schedule=_LR_SCHEDULE.value, warmup_steps=_WARMUP_STEPS.value,
            warmup_learning_rate=_WARMUP_LEARNING_RATE.value, decay_boundaries=boundaries,
            decay_factor=_LR_DECAY_FACTOR.value, cosine_alpha=_COSINE_ALPHA.value),
        runtime=config_lib.RuntimeConfig(
            strategy=_STRATEGY.value, tpu=_TPU.value, mixed_precision=_MIXED_PRECISION.value, seed=_SEED.value,
            checkpoint_steps=_CHECKPOINT_STEPS.value, keep_checkpoints=_KEEP_CHECKPOINTS.value,
            eval_interval=_EVAL_INTERVAL.value, log_steps=_LOG_STEPS.value, progress_bar=_PROGRESS_BAR.value))


def _split_cpu(count: int) -> None:
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)


# Bad input, and a run that cannot go on: one line `error: ...` and exit code 2 (`spinenet_tf.cli`).
ERRORS = (ValueError, FileNotFoundError, loop.TrainingError)


def main() -> None:
    config = config_from_flags().validate()
    if _NUM_CPU_DEVICES.value:
        _split_cpu(_NUM_CPU_DEVICES.value)
    metrics = loop.run(config, flags_text=flags.FLAGS.flags_into_string())
    if metrics:
        print(" ".join(f"{name}={value:.4f}" if isinstance(value, float) else f"{name}={value}"
                       for name, value in metrics.items() if not isinstance(value, dict)))
        print(f"metrics: {os.path.join(config.model_dir, loop.EVAL_METRICS_FILE)}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["task", "model", "model_dir"])
    cli.run(main, ERRORS)
