"""Prints a named model's parameters and FLOPs (multiply-adds), in total and per level.

    python -m spinenet_tf.summary --model=spinenet-49 --image_size=640
    python -m spinenet_tf.summary --model=spinenet-mobile-49xs --image_size=256 --json
    python -m spinenet_tf.summary --model=maskrcnn-spinenet-49 --image_size=640
    python -m spinenet_tf.summary --model=retinanet-spinenet-49 --image_size=640 --block_specs=search/best.json
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

from absl import flags

import spinenet_tf
from spinenet_tf import cli, model_stats, registry
from spinenet_tf.backbones import block_spec_file
from spinenet_tf.image_size import parse_image_size

_MODEL = flags.DEFINE_string("model", None, "A name from `spinenet_tf.list_models()`, e.g. spinenet-49.")
_IMAGE_SIZE = flags.DEFINE_string("image_size", None, "H or H,W; each divisible by 128 (2**max_level).")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 91, "Classes of a detector or classifier head (COCO: 91; Mask "
                                    "R-CNN counts the background class 0).")
_BLOCK_SPECS = flags.DEFINE_string("block_specs", None, "A block-spec file (JSON table and stem, e.g. a search's "
                                   "best.json) replacing the model's table.")
_JSON = flags.DEFINE_boolean("json", False, "Print JSON (params, flops, per_level, model, image_size).")
flags.DEFINE_alias("image-size", "image_size")
flags.DEFINE_alias("num-classes", "num_classes")

_SIZE_DIVISOR = 128  # 2**max_level of every registered model

# Name table -> builder(name, input_shape, num_classes). RetinaNets count backbone + head (no NMS), as the papers;
# Mask R-CNNs the whole inference pass: RPN, the box head on every proposal (1000) and the mask head on every
# detection slot (100), the counting that reproduces the papers' Mask R-CNN FLOPs (bench/model_stats.py).
_BUILDERS: tuple[tuple[dict, Callable], ...] = (
    (registry.BACKBONES, lambda name, input_shape, num_classes, **overrides: spinenet_tf.build_backbone(
        name, input_shape, **overrides)),
    (registry.DETECTORS, spinenet_tf.build_detector),
    (registry.MASKRCNN_DETECTORS, spinenet_tf.build_detector),
    (registry.CLASSIFIERS, spinenet_tf.build_classifier),
)


@dataclasses.dataclass(frozen=True)
class SummaryConfig:
    """What to summarize; `__post_init__` rejects bad flags with one-line messages naming the flag."""

    model: str
    image_size: tuple[int, int]
    num_classes: int = 91
    as_json: bool = False
    block_specs: str | None = None  # a block-spec file replacing the model's table

    def __post_init__(self):
        names = [name for table, _ in _BUILDERS for name in table]
        if self.model not in names:
            raise ValueError(f"--model={self.model}: unknown model; valid names: {', '.join(names)}")
        if any(size <= 0 or size % _SIZE_DIVISOR for size in self.image_size):
            height, width = self.image_size
            raise ValueError(f"--image_size={height if height == width else f'{height},{width}'}: each side must "
                             f"be a positive multiple of {_SIZE_DIVISOR} (2**max_level)")
        least = 2 if self.model in registry.MASKRCNN_DETECTORS else 1
        if self.num_classes < least:
            raise ValueError(f"--num_classes={self.num_classes}: must be >= {least}"
                             + (" (class 0 is the background)" if least == 2 else ""))
        if self.block_specs:  # checked before any model is built
            block_spec_file.read_block_spec_file(self.block_specs, registry.backbone_family(self.model))


def config_from_flags() -> SummaryConfig:
    """The only place that reads flags."""
    return SummaryConfig(model=_MODEL.value, image_size=parse_image_size(_IMAGE_SIZE.value),
                         num_classes=_NUM_CLASSES.value, as_json=_JSON.value, block_specs=_BLOCK_SPECS.value)


def summarize(config: SummaryConfig) -> str:
    """Builds the model and returns the table or JSON text."""
    builder = next(build for table, build in _BUILDERS if config.model in table)
    input_shape = (*config.image_size, 3)
    overrides = {"block_specs": config.block_specs} if config.block_specs else {}
    stats = model_stats.model_stats(builder(config.model, input_shape=input_shape, num_classes=config.num_classes,
                                            **overrides), input_shape)
    if config.as_json:
        return json.dumps({"model": config.model, "image_size": list(config.image_size), **overrides,
                           "params": stats.params, "flops": stats.flops,
                           "per_level": {group: dataclasses.asdict(s) for group, s in stats.per_level.items()}},
                          indent=2)
    height, width = config.image_size
    table = f" with {config.block_specs}" if config.block_specs else ""
    return model_stats.format_table(stats, title=f"{config.model}{table} @ {height}x{width}")


def main() -> None:
    print(summarize(config_from_flags()))


if __name__ == "__main__":
    flags.mark_flags_as_required(["model", "image_size"])
    cli.run(main)
