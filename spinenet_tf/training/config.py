"""`TrainConfig`: the one frozen record between `python -m spinenet_tf.train`'s flags and the training library.

Tests and users build it directly (no flag parsing); `validate()` checks what can be checked without touching data
or building a model, and every message names the *flag* it is about (`--image_size=600: ...`), so the CLI turns
it into one line before any work. Saved as `model_dir/train_config.json`; `export` and `mode=eval` read it back to
rebuild the model, and a resumed run refuses a config whose model-defining fields differ.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping

from spinenet_tf import atomic_files, models, registry
from spinenet_tf.backbones import block_spec_file
from spinenet_tf.image_size import parse_image_size  # the `--image_size` parser train.py reads from here

TASKS = models.TASKS
MODES = ("train", "eval", "train_and_eval")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "constant")
MIXED_PRECISION = ("none", "bfloat16", "float16")
INIT_CHECKPOINT_MODULES = ("all", "backbone")  # Model Garden's init_checkpoint_modules values we support
CONFIG_FILE = models.CONFIG_FILE
# Fields that define the network: a resumed run must agree on them, `export` rebuilds the model from them.
MODEL_FIELDS = models.MODEL_FIELDS


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer and learning-rate schedule.

    `learning_rate` is the peak rate for the global batch (no automatic scaling). `weight_decay` is an L2 term
    `weight_decay / 2 * sum(kernel**2)` added to the loss for SGD (Model Garden's `l2(wd / 2)` regularizers), and
    decoupled weight decay (excluding batch norm and biases) for AdamW.
    """

    optimizer: str = "sgd"
    learning_rate: float = 0.08
    momentum: float = 0.9
    weight_decay: float = 4e-5
    gradient_clip_norm: float = 0.0      # 0 = no clipping; else clip the global norm (MG's gradient_clip_norm)
    schedule: str = "step"
    warmup_steps: int = 0
    warmup_learning_rate: float = 0.0    # linear warm-up from this rate to learning_rate
    decay_boundaries: tuple[float, ...] = (0.95, 0.98)  # step schedule: fractions of train_steps (MG: 475/500, 490/500)
    decay_factor: float = 0.1            # step schedule: multiply by this at each boundary
    cosine_alpha: float = 0.0            # cosine schedule: final rate = alpha * learning_rate


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """Data sources (see `spinenet_tf.data.sources`) and augmentation."""

    train_data: str | None = None
    eval_data: str | None = None
    tfds_data_dir: str | None = None
    horizontal_flip: bool = True
    aug_scale_min: float = 0.5           # SpineNet paper protocol (§5.1): scale jitter 0.5-2.0
    aug_scale_max: float = 2.0
    max_instances: int = 100
    shuffle_buffer: int = 1000
    cache: bool = False                  # cache decoded examples in memory (small datasets)
    num_eval_examples: int = 0           # 0 = the whole eval split


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the run executes."""

    strategy: str = "default"
    tpu: str = ""                        # --strategy=tpu: the TPU name or address ("" = local)
    mixed_precision: str = "none"
    seed: int = 0
    checkpoint_steps: int = 1000
    keep_checkpoints: int = 5
    eval_interval: int = 0               # train_and_eval: evaluate every N steps (0 = only at the end)
    log_steps: int = 100
    progress_bar: bool | None = None     # None = when stdout is a terminal (`show_progress_bar`)

    def show_progress_bar(self) -> bool:
        """`progress_bar`, or by default whether stdout is a terminal (so logs written to a file stay clean)."""
        if self.progress_bar is not None:
            return self.progress_bar
        return sys.stdout.isatty()


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Built from flags by `spinenet_tf.train`, or directly.

    Attributes:
        task: "detection" (RetinaNet), "instance_segmentation" (Mask R-CNN) or "classification".
        model: A registry name (`spinenet_tf.list_models("detector")` / `("classifier")`).
        image_size: (H, W), each divisible by 2**max_level.
        num_classes: Head classes; 0 = take the count from the training data.
        model_overrides: Keyword overrides for `build_detector` / `build_classifier` (e.g. activation,
            stochastic_depth_rate, label_smoothing).
        model_dir: Checkpoints, `train_config.json`, `flags.txt`, TensorBoard logs and metrics go here.
        mode: "train", "eval" (evaluate the latest checkpoint) or "train_and_eval".
        batch_size: Global batch (all replicas); must divide by the number of replicas.
        eval_batch_size: Evaluation batch.
        train_steps: Optimizer steps in all (a resumed run continues to this count).
        precise_bn_batches: After the last step, re-estimate batch-norm moving statistics on this many training
            batches (`spinenet_tf.layers.precise_bn`; 0 = off). For short, fast-moving runs.
        init_checkpoint: Initial weights of a fresh run ("" = random): a `model_dir` of ours or one of its
            checkpoints, or a Model Garden TF2 checkpoint (RetinaNet, Mask R-CNN, classification model or
            backbone), told apart automatically (`spinenet_tf.checkpoints.find_init_checkpoint`). Ignored when
            `model_dir` already has a checkpoint: the run resumes from that.
        init_checkpoint_modules: "all" (every weight; the class-prediction layers are re-initialised when
            `num_classes` differs from the checkpoint's, any other layer that does not fit is an error) or
            "backbone" (the backbone only, e.g. a classifier's into a detector). Model Garden's names (official/vision/configs/retinanet.py).
        freeze_backbone: Keep the backbone's weights and batch-norm statistics fixed (Model Garden's
            `freeze_backbone`): only the heads train.
    """

    task: str
    model: str
    model_dir: str
    image_size: tuple[int, int] = (640, 640)
    num_classes: int = 0
    model_overrides: Mapping = dataclasses.field(default_factory=dict)
    mode: str = "train_and_eval"
    batch_size: int = 8
    eval_batch_size: int = 8
    train_steps: int = 1000
    precise_bn_batches: int = 0
    init_checkpoint: str = ""
    init_checkpoint_modules: str = "all"
    freeze_backbone: bool = False
    input: InputConfig = dataclasses.field(default_factory=InputConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

    def validate(self) -> TrainConfig:
        """Raises ValueError naming the flag of the first problem; returns self."""
        _check_choice("--task", self.task, TASKS)
        _check_choice("--mode", self.mode, MODES)
        table = {"detection": registry.DETECTORS, "instance_segmentation": registry.MASKRCNN_DETECTORS,
                 "classification": registry.CLASSIFIERS}[self.task]
        if self.model not in table and not (self.task == "classification" and self.model in table.values()):
            raise ValueError(f"--model={self.model!r}: not a {self.task} model; valid names: {', '.join(table)}")
        if not self.model_dir:
            raise ValueError("--model_dir: required")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"--image_size={_size_text(self.image_size)}: give H or H,W (positive integers)")
        divisor = 2 ** int(self.model_overrides.get("max_level", 7))
        if any(side % divisor for side in self.image_size):
            raise ValueError(f"--image_size={_size_text(self.image_size)}: each side must be divisible by "
                             f"{divisor} (2**max_level)")
        if self.num_classes < 0:
            raise ValueError(f"--num_classes={self.num_classes}: must be >= 1 (or 0 to take it from the data)")
        for flag, value in (("--batch_size", self.batch_size), ("--eval_batch_size", self.eval_batch_size),
                            ("--train_steps", self.train_steps),
                            ("--checkpoint_steps", self.runtime.checkpoint_steps),
                            ("--keep_checkpoints", self.runtime.keep_checkpoints),
                            ("--log_steps", self.runtime.log_steps)):
            if value < 1:
                raise ValueError(f"{flag}={value}: must be >= 1")
        if self.precise_bn_batches < 0:
            raise ValueError(f"--precise_bn_batches={self.precise_bn_batches}: must be >= 0")
        if self.precise_bn_batches and self.task == "instance_segmentation":
            # Its forward pass without labels feeds the heads proposals, not the sampled RoIs they trained on.
            raise ValueError(f"--precise_bn_batches={self.precise_bn_batches}: not for --task=instance_segmentation")
        if self.precise_bn_batches and self.runtime.strategy != "default":
            raise ValueError(f"--precise_bn_batches={self.precise_bn_batches}: needs --strategy=default (one "
                             f"replica), not --strategy={self.runtime.strategy}")
        _check_choice("--init_checkpoint_modules", self.init_checkpoint_modules, INIT_CHECKPOINT_MODULES)
        if self.precise_bn_batches and self.freeze_backbone and self.task == "classification":
            raise ValueError(f"--precise_bn_batches={self.precise_bn_batches}: nothing to re-estimate with "
                             f"--freeze_backbone (the classification head has no batch norm)")
        if self.runtime.eval_interval < 0:
            raise ValueError(f"--eval_interval={self.runtime.eval_interval}: must be >= 0")
        if self.mode != "eval" and not self.input.train_data:
            raise ValueError(f"--train_data: required for --mode={self.mode}")
        if self.mode != "train" and not self.input.eval_data:
            raise ValueError(f"--eval_data: required for --mode={self.mode}")
        if not 0 < self.input.aug_scale_min <= self.input.aug_scale_max:
            raise ValueError(f"--aug_scale_min={self.input.aug_scale_min}, --aug_scale_max="
                             f"{self.input.aug_scale_max}: need 0 < min <= max")
        _check_choice("--strategy", self.runtime.strategy, STRATEGIES)
        _check_choice("--mixed_precision", self.runtime.mixed_precision, MIXED_PRECISION)
        optimizer = self.optimizer
        _check_choice("--optimizer", optimizer.optimizer, OPTIMIZERS)
        _check_choice("--lr_schedule", optimizer.schedule, SCHEDULES)
        if optimizer.learning_rate < 0:  # 0 trains nothing (checks a start such as --init_checkpoint)
            raise ValueError(f"--learning_rate={optimizer.learning_rate}: must be >= 0")
        if optimizer.warmup_steps < 0 or optimizer.warmup_steps >= self.train_steps:
            raise ValueError(f"--warmup_steps={optimizer.warmup_steps}: must be in [0, --train_steps)")
        boundaries = optimizer.decay_boundaries
        if optimizer.schedule == "step" and (list(boundaries) != sorted(boundaries)
                                             or any(not 0 < b < 1 for b in boundaries)):
            raise ValueError(f"--lr_decay_boundaries={','.join(map(str, boundaries))}: increasing fractions of "
                             f"--train_steps in (0, 1)")
        return self

    # === Saving ===
    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping) -> TrainConfig:
        data = dict(data)
        data["image_size"] = tuple(data["image_size"])
        data["input"] = InputConfig(**data.get("input", {}))
        optimizer = dict(data.get("optimizer", {}))
        if "decay_boundaries" in optimizer:
            optimizer["decay_boundaries"] = tuple(optimizer["decay_boundaries"])
        data["optimizer"] = OptimizerConfig(**optimizer)
        data["runtime"] = RuntimeConfig(**data.get("runtime", {}))
        return cls(**data)

    def save(self, model_dir: str | None = None) -> str:
        # Atomic: a kill mid-write never leaves half a config.
        return atomic_files.write_text(os.path.join(model_dir or self.model_dir, CONFIG_FILE), self.to_json())

    @classmethod
    def load(cls, model_dir: str) -> TrainConfig:
        """The config saved in `model_dir` by a training run; FileNotFoundError names the file if absent."""
        return cls.from_dict(models.read_config_file(model_dir))

    def model_config(self) -> models.ModelConfig:
        """The model part (what `models.build_model` builds), with the L2 term of the optimizer's weight decay."""
        return models.ModelConfig(self.task, self.model, tuple(self.image_size), self.num_classes,
                                  dict(self.model_overrides),
                                  models.loss_weight_decay(self.optimizer.optimizer, self.optimizer.weight_decay))

    def model_differences(self, other: TrainConfig) -> list[str]:
        """The model-defining fields where `other` differs, as "field: saved -> new" strings."""
        mine, theirs = dataclasses.asdict(self), dataclasses.asdict(other)
        return [f"{field}: {_jsonable(mine[field])} -> {_jsonable(theirs[field])}" for field in MODEL_FIELDS
                if _jsonable(mine[field]) != _jsonable(theirs[field])]


def _jsonable(value):
    return json.loads(json.dumps(value, sort_keys=True))


def _size_text(size) -> str:
    return ",".join(str(side) for side in size)


def _check_choice(flag: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{flag}={value!r}: must be one of {', '.join(choices)}")


def parse_overrides(items) -> dict:
    """["activation=swish", "stochastic_depth_rate=0.2"] -> {"activation": "swish", "stochastic_depth_rate": 0.2}.

    Values are read as JSON when they parse (numbers, true/false, lists), else kept as strings.
    """
    overrides = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--model_overrides={item!r}: expected key=value")
        value = value.strip()
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return overrides


def block_specs_override(path: str, model: str, overrides: Mapping) -> dict:
    """`overrides` with `--block_specs=FILE` added as `block_specs`: the file's JSON object itself (checked against
    the model's family), so that `train_config.json` holds the table and not a path that may change.

    Raises:
        ValueError, FileNotFoundError: One line naming the file; also when `overrides` has a `block_specs` already.
    """
    if "block_specs" in overrides:
        raise ValueError(f"--block_specs={path}: --model_overrides sets block_specs too; give one")
    family = registry.backbone_family(model)
    architecture = block_spec_file.read_block_spec_file(path, family, int(overrides.get("min_level", 3)),
                                                        int(overrides.get("max_level", 7)))
    return {**overrides, "block_specs": architecture.to_json_dict()}
