"""Parameter and FLOP counts of any Keras model, in total and per SpineNet level.

Conventions are those of the SpineNet papers (arXiv:1912.05027, arXiv:2010.11426) and Model Garden's published
tables, so our numbers can be put beside theirs:

- **Parameters** are trainable weights (batch-norm moving statistics are not counted).
- **FLOPs are multiply-adds**: the TensorFlow profiler's float-op count (`ProfileOptionBuilder.float_operation()`,
  which counts a multiply-add as 2) of the model's inference graph at a fixed input shape, halved.
- NOTE: inference batch norm costs nothing. Keras 3 lowers it to element-wise mul/add ops (under a `batchnorm`
  name scope) that the profiler counts, while tf_keras/Model Garden use `FusedBatchNormV3`, which it does not;
  at inference BN folds into the preceding convolution anyway. We drop the `batchnorm` ops so the count matches
  Model Garden's (about +3% on SpineNet-Mobile otherwise). `model_stats_test.py` pins this.

The per-level breakdown reads the structural layer names of `spinenet_tf` backbones, from variable paths and
graph op names: `stem_*` -> "stem"; `blockNN_lL_*` and that block's `blockNN_resample*` / `blockNN_fuse*` -> "L<L>";
`endpoint_lL_*` -> "P<L>" (the endpoint at level L); a name with a `head` word (`retinanet_head`, `head_conv`) ->
"head"; anything else -> "other". The outermost matching name component decides, so a backbone nested inside a
detector is still broken down.

    stats = model_stats(spinenet_tf.build_backbone("spinenet-49", (640, 640, 3)), (640, 640, 3))
    stats.params, stats.flops, stats.per_level["L3"].flops
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence

import tensorflow as tf
from tensorflow.python.util import deprecation

_STEM = re.compile(r"stem_")
_LEVEL_BLOCK = re.compile(r"block(\d+)_l(\d+)_")           # block07_l5_bottleneck(_r2)(_1)
_BLOCK_PART = re.compile(r"block(\d+)_(?:resample|fuse)")  # block07_resample0, block07_fuse(_act)
_ENDPOINT = re.compile(r"endpoint_l(\d+)_")                # endpoint_l3_conv
_HEAD = re.compile(r"(?:^|_)head(?:_|$)")


@dataclasses.dataclass(frozen=True)
class GroupStats:
    """Cost of one group of layers."""

    params: int
    flops: int  # multiply-adds


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """Parameter and FLOP counts of a model at one input shape.

    Attributes:
        params: Trainable weights.
        flops: Multiply-adds of one forward pass at inference, for the whole batch.
        input_shape: Shape of one example, e.g. (640, 640, 3).
        batch: Batch size the FLOPs are for.
        per_level: Group name -> GroupStats, in the order stem, L1..L7, P3..P7, head, other; only groups present.
            The groups sum to the totals.
    """

    params: int
    flops: int
    input_shape: tuple[int, ...]
    batch: int
    per_level: dict[str, GroupStats]

    def to_json_dict(self) -> dict:
        return dataclasses.asdict(self)


def count_params(model) -> int:
    """Trainable weights of a Keras 3 or tf_keras model (the papers' and Model Garden's parameter count)."""
    return sum(_size(v) for v in _unique(model.trainable_weights))


def count_flops(model, input_shape: Sequence[int], batch: int = 1) -> int:
    """Multiply-adds of one inference forward pass of `model` on a `(batch, *input_shape)` input.

    Args:
        model: Any Keras 3 or tf_keras model (or layer) taking one tensor.
        input_shape: Shape of one example, fully defined, e.g. (640, 640, 3).
        batch: Batch size.

    Returns:
        The TensorFlow profiler's float ops (batch norm excluded, see the module docstring) divided by 2,
        rounded per group as in `model_stats`, so the two always agree.
    """
    return sum(_flops_by_group(_op_float_ops(model, input_shape, batch), {}).values())


def model_stats(model, input_shape: Sequence[int], batch: int = 1) -> ModelStats:
    """Params and FLOPs of `model`, in total and per level (see the module docstring for the groups).

    Example:
        >>> stats = model_stats(spinenet_tf.build_backbone("spinenet-mobile-49xs", (256, 256, 3)), (256, 256, 3))
        >>> list(stats.per_level)[:3]
        ['stem', 'L2', 'L3']
    """
    weights = [(_weight_name(v), _size(v)) for v in _unique(model.trainable_weights)]
    op_flops = _op_float_ops(model, input_shape, batch)
    block_levels = _block_levels([name for name, _ in weights])
    params = collections.Counter()
    for name, size in weights:
        params[group_of(name, block_levels)] += size
    flops = _flops_by_group(op_flops, block_levels)
    groups = sorted(set(params) | set(flops), key=_group_sort_key)
    per_level = {group: GroupStats(params[group], flops.get(group, 0)) for group in groups}
    return ModelStats(params=sum(params.values()), flops=sum(flops.values()),
                      input_shape=tuple(int(d) for d in input_shape), batch=batch, per_level=per_level)


def group_of(name: str, block_levels: Mapping[int, int]) -> str:
    """The group of a variable path or op name, e.g. "spinenet_49_1/block07_resample0_1/conv/Conv2D" -> "L5".

    Args:
        name: A '/'-separated variable path or graph op name.
        block_levels: Block index -> level, for `blockNN_resample*` / `blockNN_fuse*` names (see `_block_levels`).
    """
    for part in name.split("/"):
        if _STEM.match(part):
            return "stem"
        if m := _LEVEL_BLOCK.match(part):
            return f"L{int(m.group(2))}"
        if m := _BLOCK_PART.match(part):
            level = block_levels.get(int(m.group(1)))
            return "other" if level is None else f"L{level}"
        if m := _ENDPOINT.match(part):
            return f"P{int(m.group(1))}"
        if _HEAD.search(part):
            return "head"
    return "other"


def format_table(stats: ModelStats, title: str = "") -> str:
    """A plain-text table: one row per group, then the total; FLOPs as multiply-adds."""
    rows = [(group, s.params, s.flops) for group, s in stats.per_level.items()]
    rows.append(("total", stats.params, stats.flops))
    lines = [title] if title else []
    lines.append(f"{'group':<8}{'params':>14}{'FLOPs (mult-adds)':>20}")
    for i, (group, params, flops) in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("-" * 42)
        lines.append(f"{group:<8}{params:>14,}{flops:>20,}")
    lines.append(f"total: {stats.params / 1e6:.3f} M params, {stats.flops / 1e9:.3f} B multiply-adds "
                 f"(input {stats.batch}x{'x'.join(map(str, stats.input_shape))})")
    return "\n".join(lines)


# --- internals ------------------------------------------------------------------------------------------------
def _op_float_ops(model, input_shape: Sequence[int], batch: int) -> dict[str, int]:
    """Op name -> profiler float ops (2 per multiply-add) of the inference graph, batch-norm ops left out."""
    shape = [batch, *input_shape]
    if any(d is None for d in shape):
        raise ValueError(f"input shape {tuple(shape)} must be fully defined to count FLOPs")
    inputs = getattr(model, "inputs", None)
    dtype = inputs[0].dtype if inputs else tf.float32
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec(shape, dtype)).graph
    # Counts come from static shapes, so the unfrozen graph gives the same numbers as one frozen with
    # `convert_variables_to_constants_v2`, without copying the weights into it.
    options = (tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
               .with_empty_output().build())
    with deprecation.silence():  # the profiler's FLOP rules call a deprecated TF1 shape helper
        profile = tf.compat.v1.profiler.profile(graph=graph, options=options)
    counts = {}
    todo = list(profile.children)
    while todo:
        node = todo.pop()
        todo.extend(node.children)
        if node.float_ops and "batchnorm" not in node.name.split("/"):
            counts[node.name] = node.float_ops
    return counts


def _flops_by_group(op_flops: Mapping[str, int], block_levels: Mapping[int, int]) -> dict[str, int]:
    """Group -> multiply-adds: float ops summed per group, then halved (rounding half up)."""
    block_levels = {**_block_levels(op_flops), **block_levels}
    float_ops = collections.Counter()
    for name, ops in op_flops.items():
        float_ops[group_of(name, block_levels)] += ops
    return {group: (ops + 1) // 2 for group, ops in float_ops.items()}


def _block_levels(names: Iterable[str]) -> dict[int, int]:
    """Block index -> level, read from `blockNN_lL_*` name components."""
    levels = {}
    for name in names:
        for part in name.split("/"):
            if m := _LEVEL_BLOCK.match(part):
                levels[int(m.group(1))] = int(m.group(2))
    return levels


def _group_sort_key(group: str):
    order = {"stem": 0, "L": 1, "P": 2, "head": 3, "other": 4}
    if group[0] in "LP" and group[1:].isdigit():
        return (order[group[0]], int(group[1:]))
    return (order.get(group, 5), group)


def _unique(variables) -> list:
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def _size(variable) -> int:
    return math.prod(int(d) for d in variable.shape)


def _weight_name(variable) -> str:
    # Keras 3 variables have a structural `path` ("block07_resample0/out_conv/kernel"); tf_keras ones a `name`.
    return getattr(variable, "path", None) or variable.name
