"""Searches a scale-permuted backbone: PyGlove proposes tables of a space, each is trained briefly, val AP scores it.

    python -m spinenet_tf.search --flagfile=configs/search_r0_sp53_shapes.flags --search_dir=runs/search \
        [--num_trials=32 --num_workers=2 --max_flops=2e8 ...]

Started again with the same command, a search resumes: finished trials are replayed, not re-run. Every trial is
appended to SEARCH_DIR/trials.jsonl; SEARCH_DIR/best.json is a block-spec file of the best table so far (`python -m
spinenet_tf.train --block_specs=SEARCH_DIR/best.json`, `summary`, `draw`). One line per finished trial, with the
running best. The proxy task (`spinenet_tf.search.proxy`) and the loop (`spinenet_tf.search.run`) say the rest;
docs/search.md is the guide. This module only reads flags.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags

from spinenet_tf import cli
from spinenet_tf.image_size import parse_image_size
from spinenet_tf.search import proxy, run
from spinenet_tf.search.spaces import SPACES, get_space
from spinenet_tf.training import config as config_lib
from spinenet_tf.training import loop, tasks

# === The search ===
_SPACE = flags.DEFINE_enum("space", "spinenet", list(SPACES), "Search space (spinenet_tf.search.spaces).")
_ALGORITHM = flags.DEFINE_enum("algorithm", "evolution", list(run.ALGORITHMS),
                               "Regularized evolution or uniform random sampling (PyGlove).")
_NUM_TRIALS = flags.DEFINE_integer("num_trials", 16, "Trials in all (a resumed search continues to this count).")
_SEARCH_DIR = flags.DEFINE_string("search_dir", None, "search.json, trials.jsonl, best.json and trials/ go here.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the algorithm, and of every trial's weights and augmentation.")
_POPULATION_SIZE = flags.DEFINE_integer("population_size", 20, "Regularized evolution: population.")
_TOURNAMENT_SIZE = flags.DEFINE_integer("tournament_size", 5, "Regularized evolution: tournament size.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 1, "Trials trained at once, each in a process of its own (0: "
                                    "one at a time in this process).")
_MAX_FLOPS = flags.DEFINE_float("max_flops", 0, "Reject, untrained, a table whose proxy RetinaNet costs more "
                                "multiply-adds than this at --image_size (e.g. 2e8); 0 = no limit.")
_REWARD = flags.DEFINE_enum("reward", "proxy", ["proxy", "synthetic"],
                            "proxy: val AP of a short training run. synthetic: agreement with a fixed random table "
                            "of the space, no training (tests, plumbing checks).")
# === The proxy task: model ===
_FILTER_SIZE_SCALE = flags.DEFINE_float("filter_size_scale", 0.25, "Backbone width multiplier (paper's proxy: 0.25).")
_RESAMPLE_ALPHA = flags.DEFINE_float("resample_alpha", 0.25, "Resampling alpha (paper's proxy: 0.25; SpineNet "
                                     "family only).")
_ENDPOINTS_NUM_FILTERS = flags.DEFINE_integer("endpoints_num_filters", 64, "P3-P7 width (paper's proxy: 64).")
_HEAD_NUM_FILTERS = flags.DEFINE_integer("head_num_filters", 64, "Box/class head width (paper's proxy: 64).")
_HEAD_NUM_CONVS = flags.DEFINE_integer("head_num_convs", 4, "Box/class head convolutions.")
_ACTIVATION = flags.DEFINE_enum("activation", "swish", ["relu", "swish", "hard_swish"], "Backbone and head "
                                "activation.")
_MODEL_OVERRIDES = flags.DEFINE_list("model_overrides", [], "Further key=value overrides of the proxy's RetinaNet "
                                     "(as the train command takes them), e.g. anchor_size=1.5,use_separable_conv=true.")
_IMAGE_SIZE = flags.DEFINE_string("image_size", "512", "Input size H or H,W, divisible by 128 (paper's proxy: 512).")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 0, "Head classes; 0 = the training data's class count.")
# === The proxy task: data and training (as `python -m spinenet_tf.train` takes them) ===
_TRAIN_DATA = flags.DEFINE_string("train_data", None, "Training data source (builtin:shapes:train[:256], "
                                  "coco:ANNOTATIONS.json:IMAGE_DIR, tfds:NAME[:split], tfrecord:GLOB).")
_EVAL_DATA = flags.DEFINE_string("eval_data", None, "The held-out data whose AP is the reward.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir for tfds: sources.")
_NUM_EVAL_EXAMPLES = flags.DEFINE_integer("num_eval_examples", 0, "Evaluate on this many examples (0 = all).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 300, "Optimizer steps per trial.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Training batch.")
_EVAL_BATCH_SIZE = flags.DEFINE_integer("eval_batch_size", 16, "Evaluation batch.")
_CACHE = flags.DEFINE_bool("cache", False, "Cache decoded training examples in memory (small datasets).")
_AUG_SCALE_MIN = flags.DEFINE_float("aug_scale_min", 0.5, "Scale jitter minimum.")
_AUG_SCALE_MAX = flags.DEFINE_float("aug_scale_max", 2.0, "Scale jitter maximum.")
_MAX_INSTANCES = flags.DEFINE_integer("max_instances", 100, "Ground-truth boxes kept per image.")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adamw", list(config_lib.OPTIMIZERS), "SGD with momentum, or AdamW.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 6e-3, "Peak learning rate.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 1e-4, "Weight decay.")
_LR_SCHEDULE = flags.DEFINE_enum("lr_schedule", "cosine", list(config_lib.SCHEDULES), "After warm-up: step, "
                                 "cosine or constant.")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 30, "Linear warm-up steps.")
_GRADIENT_CLIP_NORM = flags.DEFINE_float("gradient_clip_norm", 10.0, "Clip the global gradient norm (0 = off).")
_STRATEGY = flags.DEFINE_enum("strategy", "default", list(config_lib.STRATEGIES), "Each trial's tf.distribute "
                              "strategy.")


def config_from_flags() -> tuple[dict, proxy.ProxyTask]:
    """The only place that reads flags: the search's arguments (for `run.search`) and the proxy task."""
    space = get_space(_SPACE.value)
    if _NUM_TRIALS.value < 1:
        raise ValueError(f"--num_trials={_NUM_TRIALS.value}: must be >= 1")
    if _NUM_WORKERS.value < 0:
        raise ValueError(f"--num_workers={_NUM_WORKERS.value}: must be >= 0")
    if _MAX_FLOPS.value < 0:
        raise ValueError(f"--max_flops={_MAX_FLOPS.value:g}: must be >= 0 (0 = no limit)")
    extra = config_lib.parse_overrides(_MODEL_OVERRIDES.value)
    if "block_specs" in extra:
        raise ValueError("--model_overrides: block_specs is what the search chooses; it cannot be set")
    overrides = proxy.proxy_overrides(space.family, _FILTER_SIZE_SCALE.value, _RESAMPLE_ALPHA.value,
                                      _ENDPOINTS_NUM_FILTERS.value, _HEAD_NUM_FILTERS.value, _HEAD_NUM_CONVS.value)
    train = config_lib.TrainConfig(
        task="detection", model=proxy.proxy_model(space.family), model_dir=_SEARCH_DIR.value,
        image_size=parse_image_size(_IMAGE_SIZE.value), num_classes=_NUM_CLASSES.value,
        model_overrides={**overrides, "activation": _ACTIVATION.value,
                         **extra}, batch_size=_BATCH_SIZE.value,
        eval_batch_size=_EVAL_BATCH_SIZE.value, train_steps=_TRAIN_STEPS.value,
        input=config_lib.InputConfig(
            train_data=_TRAIN_DATA.value, eval_data=_EVAL_DATA.value, tfds_data_dir=_TFDS_DATA_DIR.value,
            aug_scale_min=_AUG_SCALE_MIN.value, aug_scale_max=_AUG_SCALE_MAX.value,
            max_instances=_MAX_INSTANCES.value, cache=_CACHE.value, num_eval_examples=_NUM_EVAL_EXAMPLES.value),
        optimizer=config_lib.OptimizerConfig(
            optimizer=_OPTIMIZER.value, learning_rate=_LEARNING_RATE.value, weight_decay=_WEIGHT_DECAY.value,
            gradient_clip_norm=_GRADIENT_CLIP_NORM.value, schedule=_LR_SCHEDULE.value,
            warmup_steps=_WARMUP_STEPS.value),
        runtime=config_lib.RuntimeConfig(strategy=_STRATEGY.value, seed=_SEED.value, progress_bar=False,
                                         checkpoint_steps=_TRAIN_STEPS.value, keep_checkpoints=1,
                                         log_steps=max(1, _TRAIN_STEPS.value // 10))).validate()
    if not train.num_classes:  # resolved once here, so every trial's model (and its FLOPs) has the same head
        train = dataclasses.replace(train, num_classes=tasks.make_task(train).num_classes())
    task = proxy.ProxyTask(train, max_flops=_MAX_FLOPS.value or None)
    search_args = dict(space=space, search_dir=_SEARCH_DIR.value, num_trials=_NUM_TRIALS.value,
                       algorithm=_ALGORITHM.value, seed=_SEED.value, population_size=_POPULATION_SIZE.value,
                       tournament_size=_TOURNAMENT_SIZE.value, num_workers=_NUM_WORKERS.value)
    return search_args, task


def main() -> None:
    search_args, task = config_from_flags()
    reward = task if _REWARD.value == "proxy" else proxy.SyntheticReward.for_space(search_args["space"], task)
    records = run.search(reward_fn=reward, log=lambda line: print(line, flush=True), **search_args)
    best = run.best_trial(records)
    if best is None:
        print(f"no trial succeeded; see {os.path.join(search_args['search_dir'], run.TRIALS_FILE)}")
    else:
        print(f"best: trial {best['trial'] + 1}, reward {best['reward']:.4f}: "
              f"{os.path.join(search_args['search_dir'], run.BEST_FILE)}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["search_dir", "train_data", "eval_data"])
    cli.run(main, (ValueError, FileNotFoundError, loop.TrainingError))
