"""RetinaNet anchors and the per-anchor tensor layout, in TensorFlow ops only (no Keras, exportable).

Anchors follow RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, arXiv:1708.02002) as built
by Model Garden's `official/vision/ops/anchor.py::Anchor` (tf-models-official 2.20.0), value for value.

Conventions used by every module in `spinenet_tf.detection`:
- Level L means stride 2**L; a level's feature map is ceil(H / 2**L) x ceil(W / 2**L).
- Boxes are `[ymin, xmin, ymax, xmax]` in input pixels, float32.
- Anchor order ("the anchor layout"): level-major (ascending), then row y, then column x, then the A anchors of a
  location, scale-major (`for scale in range(num_scales): for ratio in aspect_ratios`). This is the order of a head
  output `[B, H, W, A * K]` reshaped to `[B, H * W * A, K]` and concatenated over levels, so flat targets, flat head
  outputs and flat anchors line up index for index.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import tensorflow as tf


def feature_sizes(min_level: int, max_level: int, image_size: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Feature-map size (H_l, W_l) of each level: ceil(size / 2**level), as MG's `Anchor`."""
    height, width = int(image_size[0]), int(image_size[1])
    return {level: (math.ceil(height / 2**level), math.ceil(width / 2**level))
            for level in range(min_level, max_level + 1)}


def generate_anchors(min_level: int, max_level: int, num_scales: int, aspect_ratios: Sequence[float],
                     anchor_size: float, image_size: Sequence[int]) -> dict[int, tf.Tensor]:
    """Generates the anchors of every level, `{level: [H_l * W_l * A, 4]}` with A = num_scales * len(aspect_ratios).

    Anchor (y, x, scale s, ratio r) at level L: centre (stride/2 + y * stride, stride/2 + x * stride), where
    stride = image_size / feature_size (2**L when the size divides); size = anchor_size * 2**L * 2**(s / num_scales);
    width = size * sqrt(r), height = size / sqrt(r) (r is width / height).

    Args:
        min_level: Lowest pyramid level (3 for RetinaNet).
        max_level: Highest pyramid level (7 for RetinaNet).
        num_scales: Intermediate scales per octave (3 for RetinaNet).
        aspect_ratios: Width / height ratios (RetinaNet: [0.5, 1.0, 2.0]).
        anchor_size: Base anchor size in units of the level stride (MG: 3 for SpineNet-49/96, 4 for 143/190).
        image_size: (height, width) of the network input in pixels; need not be square.

    Returns:
        `{level: float32 [H_l * W_l * A, 4]}` boxes `[ymin, xmin, ymax, xmax]` in input pixels, in the anchor layout.

    Example:
        anchors = generate_anchors(3, 7, 3, [0.5, 1.0, 2.0], 3.0, (640, 640))
        anchors[3].shape  # (80 * 80 * 9, 4)
    """
    if min_level > max_level:
        raise ValueError(f"min_level={min_level} > max_level={max_level}")
    if num_scales < 1 or not aspect_ratios:
        raise ValueError(f"need num_scales >= 1 and at least one aspect ratio, got {num_scales}, {aspect_ratios}")
    height, width = int(image_size[0]), int(image_size[1])
    anchors = {}
    for level, (feat_h, feat_w) in feature_sizes(min_level, max_level, image_size).items():
        # Arithmetic mirrors MG op for op (float32 tf.range, Python-float half sizes) so results are bit-identical.
        stride_y = tf.cast(height / feat_h, tf.float32)
        stride_x = tf.cast(width / feat_w, tf.float32)
        xv, yv = tf.meshgrid(tf.range(stride_x / 2, width, stride_x), tf.range(stride_y / 2, height, stride_y))
        per_location = []
        for scale in range(num_scales):
            for ratio in aspect_ratios:
                base_size = anchor_size * 2**level * 2 ** (scale / num_scales)
                half_w = base_size * ratio**0.5 / 2.0
                half_h = base_size * ratio**-0.5 / 2.0
                per_location.append(tf.stack([yv - half_h, xv - half_w, yv + half_h, xv + half_w], axis=-1))
        anchors[level] = tf.reshape(tf.stack(per_location, axis=2), [-1, 4])  # [H, W, A, 4] -> anchor layout
    return anchors


def concat_anchors(anchors: Mapping[int, tf.Tensor]) -> tf.Tensor:
    """Concatenates `{level: [N_l, 4]}` in ascending level order into `[N, 4]` (the flat anchor layout)."""
    return tf.concat([tf.reshape(anchors[level], [-1, 4]) for level in sorted(anchors, key=int)], axis=0)


def flatten_levels(outputs: Mapping[int, tf.Tensor], last_dim: int) -> tf.Tensor:
    """Flattens per-level head outputs `{level: [B, H, W, A * last_dim]}` into `[B, N, last_dim]`.

    Use `last_dim=4` for box outputs and `last_dim=num_classes` for class logits; the result follows the anchor
    layout (MG's `loss_utils.multi_level_flatten`).
    """
    flat = []
    for level in sorted(outputs, key=int):
        x = outputs[level]
        batch = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
        if x.shape[-1] is not None and x.shape[-1] % last_dim:
            raise ValueError(f"level {level}: last dimension {x.shape[-1]} is not a multiple of {last_dim}")
        flat.append(tf.reshape(x, [batch, -1, last_dim]))
    return tf.concat(flat, axis=1)


def split_levels(flat: tf.Tensor, sizes: Mapping[int, tuple[int, int]], anchors_per_location: int
                 ) -> dict[int, tf.Tensor]:
    """Inverse of `flatten_levels`, any leading dims: `[..., N, K]` -> `{level: [..., H_l, W_l, A * K]}`.

    For per-anchor scalars (class targets, masks) pass `x[..., None]` to get `{level: [..., H_l, W_l, A]}`.

    Args:
        flat: Per-anchor values in the anchor layout; N must equal sum(H_l * W_l) * anchors_per_location.
        sizes: `{level: (H_l, W_l)}`, e.g. from `feature_sizes`.
        anchors_per_location: A, anchors per feature-map location.
    """
    levels = sorted(sizes, key=int)
    counts = [sizes[level][0] * sizes[level][1] * anchors_per_location for level in levels]
    if flat.shape.rank is not None and flat.shape.rank < 2:
        raise ValueError(f"split_levels: expected [..., N, K], got shape {flat.shape}")
    if flat.shape[-2] is not None and flat.shape[-2] != sum(counts):
        raise ValueError(f"split_levels: {flat.shape[-2]} anchors, but levels {dict(sizes)} with "
                         f"{anchors_per_location} anchors per location hold {sum(counts)}")
    static = flat.shape[:-2]
    leading = static.as_list() if static.is_fully_defined() else tf.unstack(tf.shape(flat)[:-2], num=static.rank)
    out = {}
    for level, piece in zip(levels, tf.split(flat, counts, axis=-2)):
        h, w = sizes[level]
        out[level] = tf.reshape(piece, [*leading, h, w, -1])
    return out


class AnchorGenerator:
    """RetinaNet anchor configuration; calling it with an image size returns `generate_anchors(...)`.

    Args:
        min_level, max_level, num_scales, aspect_ratios, anchor_size: As in `generate_anchors`
            (defaults: MG's `retinanet_spinenet_coco`, `official/vision/configs/retinanet.py`).

    Example:
        anchor_generator = AnchorGenerator()
        anchors = anchor_generator((640, 640))    # {3: [57600, 4], ..., 7: [225, 4]}
    """

    def __init__(self, min_level: int = 3, max_level: int = 7, num_scales: int = 3,
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), anchor_size: float = 3.0):
        self.min_level = int(min_level)
        self.max_level = int(max_level)
        self.num_scales = int(num_scales)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.anchor_size = float(anchor_size)

    @property
    def anchors_per_location(self) -> int:
        return self.num_scales * len(self.aspect_ratios)

    def feature_sizes(self, image_size: Sequence[int]) -> dict[int, tuple[int, int]]:
        return feature_sizes(self.min_level, self.max_level, image_size)

    def __call__(self, image_size: Sequence[int]) -> dict[int, tf.Tensor]:
        return generate_anchors(self.min_level, self.max_level, self.num_scales, self.aspect_ratios,
                                self.anchor_size, image_size)

    def get_config(self) -> dict:
        return {"min_level": self.min_level, "max_level": self.max_level, "num_scales": self.num_scales,
                "aspect_ratios": list(self.aspect_ratios), "anchor_size": self.anchor_size}
