"""The built-in dataset: generated shapes on textured backgrounds, for detection and classification.

`make demo` trains RetinaNet SpineNet-Mobile-49XS on it on a CPU, so it must be learnable in minutes, yet not
trivial: six classes of solid shapes (`CLASS_NAMES`) whose colour says nothing about the class, long sides from
`MIN_OBJECT_SIZE` (12 px) to `MAX_OBJECT_FRACTION` (60%) of the image, width/height aspect ratios in
`ASPECT_RATIO_RANGE` (0.4-2.5), 1 to `MAX_OBJECTS` (5) per image, some overlapping, on smooth noise, gradients
and soft stripes that never have hard edges. Examples are generated on the fly in numpy (no downloads, no files);
the default train split (2,000 images) takes a few seconds (`bench/data_generation.py`).

Conventions:
- **Determinism**: example `index` of `split` comes from a numpy Generator seeded with (task, split, index)
  only, so any example can be regenerated alone, in any order. (NumPy does not promise the same Generator
  streams across its releases, so the exact pixels belong to the numpy of requirements-dev.txt.)
- **Boxes** are `[ymin, xmin, ymax, xmax]` in pixels and are the tight box of the object's *visible* mask, in
  pixel-edge coordinates: mask pixel (row r, column c) covers [r, r + 1) x [c, c + 1), so
  `ymax = last mask row + 1`. This is also the box pycocotools' `mask.toBbox` gives, as `[x, y, w, h]`.
- **Occlusion**: shapes are painted in order, later ones on top. A shape is only painted if every shape under
  it keeps at least `MIN_VISIBLE_FRACTION` (50%) of its own area visible, so every painted shape is annotated
  and nothing is half-hidden without a label. Annotations (box, mask, area) are of the visible part.
- **Masks**: exact per-instance binary masks of the visible pixels (ready for Mask R-CNN).
- **Ids**: image ids are unique across splits (train index i -> i + 1, validation index i -> 10,000,001 + i);
  annotation ids are `image_id * 100 + k + 1` for the k-th object. COCO `category_id` = class index + 1
  (COCO reserves 0 for background); everywhere else labels are class indices in [0, `NUM_CLASSES`).

Three ways to read it, with one feature layout, that of TFDS `coco/2017` (plus LVIS's `segmentation`):
- `as_dataset(split)` / `as_classification_dataset(split)`: `tf.data` pipelines, nothing written to disk;
- `tfds.load("builtin_shapes/detection", split="train")` after importing this module (`BuiltinShapes`);
- `write_coco_json(split, path, image_dir)`: image files plus a COCO annotation file, the format of users' own
  data and of pycocotools' COCOeval.

Detection features (G objects, images H x W):
    image           uint8 [H, W, 3]
    image/filename  string, f"{image_id:012d}.png" (COCO's file naming)
    image/id        int64
    objects/id      int64 [G]         annotation ids
    objects/area    int64 [G]         visible mask pixels
    objects/bbox    float32 [G, 4]    [ymin, xmin, ymax, xmax] / [H, W, H, W], in [0, 1]
    objects/label   int64 [G]         class index
    objects/is_crowd bool [G]         always False
    objects/segmentation uint8 [G, H, W, 1]  0 or 255, as TFDS `lvis` (always in the TFDS builder; in
                                      `as_dataset` with `with_masks=True`). Read it as `mask > 0`.
Classification features: `image` uint8 [H, W, 3], `label` int64 (one shape per image, near the centre).

TensorFlow only (tf.data, TFDS), like the rest of `spinenet_tf.data`.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import io
import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from pycocotools import mask as mask_utils

CLASS_NAMES = ("rectangle", "ellipse", "triangle", "cross", "star", "ring")
NUM_CLASSES = len(CLASS_NAMES)
DEFAULT_IMAGE_SIZE = (256, 256)
SPLIT_SIZES = {"train": 2000, "validation": 200}  # default examples per split, for detection and classification

MAX_OBJECTS = 5
MIN_OBJECT_SIZE = 12            # pixels, the long side of the smallest (near-square) shapes
MIN_SHORT_SIDE = 8              # pixels; elongated shapes have a longer long side, so they stay recognisable
MAX_OBJECT_FRACTION = 0.6       # long side, as a fraction of the image's shorter side
ASPECT_RATIO_RANGE = (0.4, 2.5)  # width / height of the drawn shape's box (log-uniform)
MIN_VISIBLE_FRACTION = 0.5
CLASSIFICATION_SIZE_RANGE = (0.3, 0.75)  # long side / shorter image side, one shape per image

_SEED = 20240501
_TASK_CODES = {"detection": 0, "classification": 1}
_SPLIT_CODES = {"train": 0, "validation": 1}
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation"}
_IMAGE_ID_OFFSET = 10_000_000   # validation ids start after the largest possible train id
_OVERLAP_PROBABILITY = 0.25     # chance that a shape is aimed at an earlier shape's box
_PLACEMENT_TRIES = 8            # per wanted shape; a shape that would hide too much of another is redrawn
_MIN_COLOUR_DISTANCE = 100.0    # RGB distance to the mean background under a shape and to touching shapes

# Hue centres of the shape colours (degrees), jittered per shape; shape colours are independent of the class.
_HUES = (0, 30, 55, 110, 160, 195, 225, 270, 310)


# === Drawing (numpy) ===

@functools.lru_cache(maxsize=32)
def _unit_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an `height x width` window, scaled to [-1, 1]: v `[h, 1]`, u `[1, w]`."""
    v = (np.arange(height, dtype=np.float32) + 0.5) * (2.0 / height) - 1.0
    u = (np.arange(width, dtype=np.float32) + 0.5) * (2.0 / width) - 1.0
    return v[:, None], u[None, :]


def _polygon(v: np.ndarray, u: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd fill of a polygon given as `[N, 2]` (v, u) vertices, sampled at the pixel centres v, u."""
    v0, u0 = vertices[:, 0], vertices[:, 1]
    v1, u1 = np.roll(v0, -1), np.roll(u0, -1)
    v, u = v[..., None], u[..., None]
    spans = (v0 > v) != (v1 > v)
    dv = np.where(v1 == v0, 1.0, v1 - v0)
    crossing = spans & (u < u0 + (v - v0) * (u1 - u0) / dv)
    return np.count_nonzero(crossing, axis=-1) % 2 == 1


def _shape_mask(kind: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The bool mask of one shape of class `kind` drawn to fill (most of) an `height x width` window."""
    v, u = _unit_grid(height, width)
    name = CLASS_NAMES[kind]
    if name == "rectangle":
        return np.ones((height, width), bool)
    if name == "ellipse":
        return v * v + u * u <= 1.0
    if name == "ring":
        # The band at least 2 px wide, the hole at least 45% of the radius: the hole tells a ring from an ellipse.
        inner = min(rng.uniform(0.45, 0.7), max(0.45, 1.0 - 4.0 / min(height, width)))
        radius2 = v * v + u * u
        return (radius2 <= 1.0) & (radius2 >= inner * inner)
    if name == "triangle":
        # Apex on one side of the window (up, down, left or right), base on the opposite side.
        apex = rng.uniform(-0.7, 0.7)
        vertices = np.array([(-1.0, apex), (1.0, -1.0), (1.0, 1.0)], np.float32)
        side = rng.integers(4)
        if side >= 2:
            vertices = vertices[:, ::-1]
        if side % 2:
            vertices = -vertices
        return _polygon(v, u, vertices)
    if name == "cross":
        # Bars at least 3 px thick; each arm crosses the whole window.
        bar_v = max(rng.uniform(0.22, 0.45), 3.0 / height)
        bar_u = max(rng.uniform(0.22, 0.45), 3.0 / width)
        return (np.abs(v) <= bar_v) | (np.abs(u) <= bar_u)
    if name == "star":
        angles = rng.uniform(0, 2 * np.pi) + np.arange(10) * (np.pi / 5)
        radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.4, 0.55))
        vertices = np.stack([radii * np.sin(angles), radii * np.cos(angles)], axis=1)
        return _polygon(v, u, vertices)
    raise ValueError(f"unknown shape class {kind}")


def _sample_size(rng: np.random.Generator, long_range: tuple[float, float]) -> tuple[int, int]:
    """(height, width) of a shape's window: log-uniform aspect ratio, then a long side uniform in sqrt(size).

    sqrt-uniform sits between uniform (few small shapes) and log-uniform (COCO-like: 41% of the shapes would be
    under 32 px). Measured over 200 train images: boxes 33% COCO-small (area < 32^2), 57% medium, 10% large,
    which keeps the demo's AP target in reach while small objects still matter.
    """
    aspect = np.exp(rng.uniform(*np.log(ASPECT_RATIO_RANGE)))
    short_over_long = min(aspect, 1.0 / aspect)
    low = min(max(long_range[0], MIN_SHORT_SIDE / short_over_long), long_range[1])
    long_side = rng.uniform(np.sqrt(low), np.sqrt(long_range[1])) ** 2
    short_side = max(MIN_SHORT_SIDE, long_side * short_over_long)
    height, width = (long_side, short_side) if aspect < 1 else (short_side, long_side)
    return int(round(height)), int(round(width))


@functools.lru_cache(maxsize=32)
def _smooth_basis(length: int, knots: int) -> np.ndarray:
    """`[length, knots]` Gaussian interpolation weights (rows sum to 1): a coarse grid -> a smooth field."""
    position = (np.arange(length, dtype=np.float32) + 0.5) / length * (knots - 1)
    weights = np.exp(-0.5 * ((position[:, None] - np.arange(knots)[None, :]) / 0.6) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), np.float32) * 255.0


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float32 `[H, W, 3]` texture: muted base colour + smooth colour noise + a gradient (+ soft stripes).

    Everything is low-frequency or sinusoidal, with no hard edges and no closed contours, so the background never
    looks like a shape. Every term is a sum of products f(y) g(x, channel), so the whole texture is one matrix
    product `[H, T] @ [T, W * 3]` over T = knots + 4 terms. It is written as `np.einsum`, which does not call
    BLAS: a multi-threaded BLAS `@` is 10x slower for this thin product on a busy 2-core machine (0.7 ms vs 6 ms,
    measured), and data generation runs next to training threads.
    """
    base = _hsv(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.85))
    knots = int(rng.integers(3, 8))
    grid = rng.normal(0.0, rng.uniform(8.0, 30.0), (knots, knots, 3)).astype(np.float32)
    gradient_angle = rng.uniform(0, 2 * np.pi)
    slope = rng.uniform(-30.0, 30.0, 3).astype(np.float32)                  # per channel, over half the image
    stripes = rng.uniform() < 0.35
    frequency = 2 * np.pi / rng.uniform(12.0, 40.0)                          # stripe period: 12-40 px
    stripe_angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    amplitude = stripes * rng.uniform(6.0, 16.0) * rng.choice([-1.0, 1.0], 3).astype(np.float32)

    v, u = _unit_grid(height, width)
    y = np.arange(height, dtype=np.float32) * np.float32(frequency * np.cos(stripe_angle))
    x = np.arange(width, dtype=np.float32) * np.float32(frequency * np.sin(stripe_angle)) + np.float32(phase)
    # sin(y + x) = sin(y) cos(x) + cos(y) sin(x): stripes in any direction are two separable terms.
    y_terms = np.concatenate([_smooth_basis(height, knots), np.ones((height, 1), np.float32), v,
                              np.sin(y)[:, None], np.cos(y)[:, None]], axis=1)
    x_terms = np.concatenate([
        np.einsum("wj,ijc->iwc", _smooth_basis(width, knots), grid),        # smooth noise, [K, W, 3]
        (base + np.sin(gradient_angle) * u[0, :, None] * slope)[None],        # base colour + gradient along x
        np.broadcast_to(np.cos(gradient_angle) * slope, (1, width, 3)),       # gradient along y
        (np.cos(x)[:, None] * amplitude)[None], (np.sin(x)[:, None] * amplitude)[None],
    ], axis=0).astype(np.float32)
    return np.einsum("ht,tw->hw", y_terms, x_terms.reshape(len(x_terms), width * 3)).reshape(height, width, 3)


def _shape_colour(rng: np.random.Generator) -> np.ndarray:
    if rng.uniform() < 0.12:  # some near-black and near-white shapes
        return np.full(3, rng.choice([rng.uniform(15, 50), rng.uniform(205, 245)]), np.float32)
    hue = (rng.choice(_HUES) + rng.uniform(-12, 12)) / 360.0
    return _hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.5, 1.0))


def _pick_colour(rng: np.random.Generator, avoid: list[np.ndarray]) -> np.ndarray:
    """A shape colour at least `_MIN_COLOUR_DISTANCE` from every colour in `avoid`, else the farthest of 16."""
    best, best_distance = None, -1.0
    for _ in range(16):
        colour = _shape_colour(rng)
        distance = min(float(np.linalg.norm(colour - other)) for other in avoid)
        if distance >= _MIN_COLOUR_DISTANCE:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


@dataclasses.dataclass
class _Scene:
    """Shapes painted so far: `owner[y, x]` is the index of the topmost shape at a pixel, -1 for background."""

    background: np.ndarray
    owner: np.ndarray
    classes: list = dataclasses.field(default_factory=list)
    colours: list = dataclasses.field(default_factory=list)
    shapes: list = dataclasses.field(default_factory=list)   # (y0, x0, bool mask of the drawing window)
    full_area: list = dataclasses.field(default_factory=list)
    visible_area: list = dataclasses.field(default_factory=list)

    def try_paint(self, rng: np.random.Generator, kind: int, shape: np.ndarray, y0: int, x0: int) -> bool:
        """Paints `shape` at (y0, x0) unless that leaves a shape under it less than half visible."""
        h, w = shape.shape
        window = self.owner[y0:y0 + h, x0:x0 + w]
        covered = window[shape]
        lost = np.bincount(covered[covered >= 0], minlength=len(self.classes))
        visible = np.asarray(self.visible_area) - lost
        if np.any(visible < MIN_VISIBLE_FRACTION * np.asarray(self.full_area)):
            return False
        # Colour: away from the background here (smooth, so the window's mean will do) and from touching shapes.
        near = self.owner[max(y0 - 2, 0):y0 + h + 2, max(x0 - 2, 0):x0 + w + 2]
        touching = np.flatnonzero(np.bincount(near.ravel() + 1, minlength=len(self.classes) + 1)[1:])
        avoid = [self.background[y0:y0 + h, x0:x0 + w].mean(axis=(0, 1))] + [self.colours[i] for i in touching]
        self.colours.append(_pick_colour(rng, avoid))
        window[shape] = len(self.classes)
        self.classes.append(kind)
        self.shapes.append((y0, x0, shape))
        self.full_area.append(int(np.count_nonzero(shape)))
        self.visible_area = [*visible.tolist(), self.full_area[-1]]
        return True

    def render(self, rng: np.random.Generator) -> np.ndarray:
        """The uint8 image: background, flat shape colours (bottom to top), then fine grain over everything."""
        image = self.background
        for (y0, x0, shape), colour in zip(self.shapes, self.colours):
            image[y0:y0 + shape.shape[0], x0:x0 + shape.shape[1]][shape] = colour
        grain = rng.integers(-6, 7, self.owner.shape, dtype=np.int8)[..., None] * np.float32(rng.uniform(0.3, 1.2))
        image += grain + np.float32(0.5)  # + 0.5: the cast below truncates
        return np.clip(image, 0, 255, out=image).astype(np.uint8)

    def masks(self) -> np.ndarray:
        return (self.owner[None] == np.arange(len(self.classes), dtype=np.int8)[:, None, None]).astype(np.uint8)


def _tight_boxes(masks: np.ndarray) -> np.ndarray:
    """`[G, H, W]` masks -> `[G, 4]` float32 `[ymin, xmin, ymax, xmax]`, pixel-edge coordinates."""
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    height, width = masks.shape[1:]
    boxes = np.stack([rows.argmax(axis=1), cols.argmax(axis=1),
                      height - rows[:, ::-1].argmax(axis=1), width - cols[:, ::-1].argmax(axis=1)], axis=1)
    return boxes.astype(np.float32)


def _canonical_split(split: str) -> str:
    if split not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; valid splits are 'train' and 'validation' (or 'val')")
    return _SPLIT_ALIASES[split]


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    height, width = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    if min(height, width) < 64:
        raise ValueError(f"image_size={image_size!r}: both sides must be at least 64 pixels")
    return int(height), int(width)


def _rng_and_id(task: str, split: str, index: int) -> tuple[np.random.Generator, int]:
    split = _canonical_split(split)
    if not 0 <= index < _IMAGE_ID_OFFSET:
        raise ValueError(f"index={index}: must be in [0, {_IMAGE_ID_OFFSET})")
    rng = np.random.default_rng((_SEED, _TASK_CODES[task], _SPLIT_CODES[split], int(index)))
    return rng, _SPLIT_CODES[split] * _IMAGE_ID_OFFSET + int(index) + 1


def generate_example(index: int, split: str, image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE) -> dict:
    """Generates detection example `index` of `split`, the same one every time.

    Args:
        index: Example number, 0 <= index < 10,000,000.
        split: "train" or "validation" ("val" is accepted).
        image_size: (H, W), or one int for a square image; each side at least 64.

    Returns:
        A dict of numpy arrays, G >= 1 objects in painting order (later ones on top):
        `image` uint8 [H, W, 3]; `boxes` float32 [G, 4] `[ymin, xmin, ymax, xmax]` in pixels, the tight box of
        the visible mask; `classes` int32 [G] in [0, NUM_CLASSES); `masks` uint8 [G, H, W] (1 = visible pixel of
        the object); `image_id` int.

    Example:
        example = generate_example(0, "train")
        names = [CLASS_NAMES[c] for c in example["classes"]]
    """
    height, width = _image_size(image_size)
    rng, image_id = _rng_and_id("detection", split, index)
    scene = _Scene(_background(rng, height, width), np.full((height, width), -1, np.int8))
    long_range = (MIN_OBJECT_SIZE, MAX_OBJECT_FRACTION * min(height, width))
    num_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    for _ in range(num_objects * _PLACEMENT_TRIES):
        if len(scene.classes) == num_objects:
            break
        kind = int(rng.integers(NUM_CLASSES))
        shape = _shape_mask(kind, *_sample_size(rng, long_range), rng)
        h, w = shape.shape
        if scene.classes and rng.uniform() < _OVERLAP_PROBABILITY:
            # Aim at a point of an earlier shape's window, so that the two windows overlap.
            wy, wx, target = scene.shapes[int(rng.integers(len(scene.shapes)))]
            wh, ww = target.shape
            y0 = int(wy + rng.uniform() * wh - rng.uniform(0.15, 0.85) * h)
            x0 = int(wx + rng.uniform() * ww - rng.uniform(0.15, 0.85) * w)
        else:
            y0, x0 = int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
        scene.try_paint(rng, kind, shape, min(max(y0, 0), height - h), min(max(x0, 0), width - w))
    masks = scene.masks()
    return {"image": scene.render(rng), "boxes": _tight_boxes(masks), "classes": np.array(scene.classes, np.int32),
            "masks": masks, "image_id": image_id}


def generate_classification_example(index: int, split: str,
                                    image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE) -> dict:
    """Generates classification example `index` of `split`: one shape near the centre, same look as detection.

    The shape's long side is `CLASSIFICATION_SIZE_RANGE` (30-75%) of the shorter image side, its centre within
    10% of the image centre. Seeded apart from detection: classification example i is not detection example i.

    Returns:
        A dict of numpy arrays: `image` uint8 [H, W, 3]; `label` int (class index); `box` float32 [4] and
        `mask` uint8 [H, W] of the shape, as in `generate_example`; `image_id` int.
    """
    height, width = _image_size(image_size)
    rng, image_id = _rng_and_id("classification", split, index)
    scene = _Scene(_background(rng, height, width), np.full((height, width), -1, np.int8))
    kind = int(rng.integers(NUM_CLASSES))
    side = min(height, width)
    shape = _shape_mask(kind, *_sample_size(rng, tuple(f * side for f in CLASSIFICATION_SIZE_RANGE)), rng)
    h, w = shape.shape
    y0 = int(round((height - h) / 2 + rng.uniform(-0.1, 0.1) * height))
    x0 = int(round((width - w) / 2 + rng.uniform(-0.1, 0.1) * width))
    scene.try_paint(rng, kind, shape, min(max(y0, 0), height - h), min(max(x0, 0), width - w))
    masks = scene.masks()
    return {"image": scene.render(rng), "label": kind, "box": _tight_boxes(masks)[0], "mask": masks[0],
            "image_id": image_id}


# === The TFDS coco/2017 feature layout ===

def _png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 `[H, W, 3]` or `[H, W]` image, fast zlib level (the grain barely compresses anyway)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def _file_name(image_id: int, extension: str = "png") -> str:
    return f"{image_id:012d}.{extension}"


def _detection_features(example: dict, with_masks: bool) -> dict:
    """A `generate_example` dict -> numpy features in the TFDS `coco/2017` layout (see the module docstring)."""
    height, width = example["image"].shape[:2]
    num_objects = len(example["classes"])
    objects = {
        "id": example["image_id"] * 100 + np.arange(1, num_objects + 1, dtype=np.int64),
        "area": example["masks"].sum(axis=(1, 2), dtype=np.int64),
        "bbox": example["boxes"] / np.array([height, width, height, width], np.float32),
        "label": example["classes"].astype(np.int64),
        "is_crowd": np.zeros(num_objects, bool),
    }
    if with_masks:
        objects["segmentation"] = example["masks"][..., None] * np.uint8(255)
    return {"image": example["image"], "image/filename": _file_name(example["image_id"]),
            "image/id": np.int64(example["image_id"]), "objects": objects}


def _num_examples(split: str, num_examples: int | None) -> int:
    if num_examples is None:
        return SPLIT_SIZES[split]
    if not 0 < num_examples <= _IMAGE_ID_OFFSET:
        raise ValueError(f"num_examples={num_examples}: must be in [1, {_IMAGE_ID_OFFSET}]")
    return int(num_examples)


def detection_features_fn(split: str, image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE, *,
                          with_masks: bool = False):
    """The `tf.data` map function of `as_dataset`: an int64 index tensor -> that example's feature dict.

    For readers that pick, shard or shuffle indices first (`Dataset.range(a, b).shard(...).map(fn)`), so skipped
    examples are never generated (`skip` and `shard` after a map still run it on every element).
    """
    split = _canonical_split(split)
    size = _image_size(image_size)
    keys = ("id", "area", "bbox", "label", "is_crowd") + (("segmentation",) if with_masks else ())
    types = (tf.int64, tf.int64, tf.float32, tf.int64, tf.bool) + ((tf.uint8,) if with_masks else ())
    shapes = ([None], [None], [None, 4], [None], [None]) + (([None, *size, 1],) if with_masks else ())

    def generate(index):
        features = _detection_features(generate_example(int(index), split, size), with_masks)
        return (features["image"], features["image/id"], *(features["objects"][key] for key in keys))

    def to_features(index):
        image, image_id, *objects = tf.numpy_function(generate, [index], (tf.uint8, tf.int64, *types),
                                                      stateful=False)
        image.set_shape([*size, 3])
        image_id.set_shape([])
        for tensor, shape in zip(objects, shapes):
            tensor.set_shape(shape)
        return {"image": image, "image/filename": tf.strings.as_string(image_id, width=12, fill="0") + ".png",
                "image/id": image_id, "objects": dict(zip(keys, objects))}

    return to_features


def classification_features_fn(split: str, image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE):
    """The map function of `as_classification_dataset`: an int64 index -> `{"image", "label"}`."""
    split = _canonical_split(split)
    size = _image_size(image_size)

    def generate(index):
        example = generate_classification_example(int(index), split, size)
        return example["image"], np.int64(example["label"])

    def to_features(index):
        image, label = tf.numpy_function(generate, [index], (tf.uint8, tf.int64), stateful=False)
        image.set_shape([*size, 3])
        label.set_shape([])
        return {"image": image, "label": label}

    return to_features


def as_dataset(split: str, num_examples: int | None = None,
               image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE, *, with_masks: bool = False) -> tf.data.Dataset:
    """Detection examples 0..num_examples-1 of `split`, generated on the fly, in the TFDS `coco/2017` layout.

    Args:
        split: "train" or "validation" ("val" is accepted).
        num_examples: How many; `SPLIT_SIZES[split]` (2,000 / 200) by default.
        image_size: (H, W), or one int.
        with_masks: Add `objects/segmentation` (uint8 [G, H, W, 1], 0 or 255, as TFDS `lvis`).

    Returns:
        A finite `tf.data.Dataset` of feature dicts (module docstring), in index order, not shuffled, not
        batched. With `with_masks=True` and the default sizes, the same elements as
        `tfds.load("builtin_shapes/detection", split=split)`.

    Example:
        for example in as_dataset("validation", num_examples=2):
            print(example["image/id"], example["objects"]["bbox"])
    """
    to_features = detection_features_fn(split, image_size, with_masks=with_masks)
    count = _num_examples(_canonical_split(split), num_examples)
    return tf.data.Dataset.range(count).map(to_features, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def as_classification_dataset(split: str, num_examples: int | None = None,
                              image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE) -> tf.data.Dataset:
    """Classification examples of `split` as `{"image": uint8 [H, W, 3], "label": int64}`, in index order.

    Same arguments as `as_dataset`; the elements are those of `tfds.load("builtin_shapes/classification")`.
    """
    to_features = classification_features_fn(split, image_size)
    return tf.data.Dataset.range(_num_examples(_canonical_split(split), num_examples)).map(
        to_features, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# === TFDS builder ===

@dataclasses.dataclass
class BuiltinShapesConfig(tfds.core.BuilderConfig):
    """A `builtin_shapes` configuration. Custom ones go through `builder_kwargs` (see `BuiltinShapes`).

    Attributes:
        task: "detection" or "classification".
        image_size: (H, W) of every image.
        num_train, num_validation: Examples in the two splits.
    """

    task: str = "detection"
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    num_train: int = SPLIT_SIZES["train"]
    num_validation: int = SPLIT_SIZES["validation"]


class BuiltinShapes(tfds.core.GeneratorBasedBuilder):
    """TFDS builder `builtin_shapes`, registered when this module is imported; nothing is downloaded.

    Configs `detection` (the `coco/2017` layout plus `objects/segmentation`) and `classification` (`image`,
    `label`; `as_supervised=True` gives (image, label) pairs), both 256 x 256 with 2,000 train and 200
    validation examples. Records are written in index order (`disable_shuffling`), so `tfds.load` yields the
    same sequence as `as_dataset`. Images and masks are stored as PNG (lossless, so the pixels are
    `generate_example`'s): preparing `detection` took 41 s on 2 busy cores and 195 MB, as the grain does not
    compress; `as_dataset` needs neither.

    Example:
        import spinenet_tf.data.builtin_shapes  # registers the builder
        train = tfds.load("builtin_shapes/detection", split="train", data_dir="/tmp/tfds")
        # another size: builder_kwargs={"config": BuiltinShapesConfig(name="detection_384", image_size=(384, 384))}
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Six shape classes on textured backgrounds; detection and classification."}
    BUILDER_CONFIGS = [
        BuiltinShapesConfig(name="detection", task="detection",
                            description="1-5 shapes per image with boxes, labels and instance masks."),
        BuiltinShapesConfig(name="classification", task="classification",
                            description="One shape per image near the centre; the label is its class."),
    ]

    # NOTE: TFDS 4.9.10 finds a builder's source file through the `importlib_resources` backport, which it only
    # declares for Python < 3.9 (tensorflow/datasets#11212, open), so preparing a builder that lives in a package
    # fails on 3.11 with "No module named 'importlib_resources'". The file is this module: say so directly.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> tfds.core.Path:
        return tfds.core.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        if config.task not in _TASK_CODES:
            raise ValueError(f"BuiltinShapesConfig.task={config.task!r}: must be one of {', '.join(_TASK_CODES)}")
        height, width = _image_size(config.image_size)
        label = tfds.features.ClassLabel(names=CLASS_NAMES)
        image = tfds.features.Image(shape=(height, width, 3), encoding_format="png")
        if config.task == "detection":
            features = {
                "image": image,
                "image/filename": tfds.features.Text(),
                "image/id": np.int64,
                "objects": tfds.features.Sequence({
                    "id": np.int64,
                    "area": np.int64,
                    "bbox": tfds.features.BBoxFeature(),
                    "label": label,
                    "is_crowd": np.bool_,
                    "segmentation": tfds.features.Image(shape=(height, width, 1), encoding_format="png"),
                }),
            }
            supervised_keys = None
        else:
            features = {"image": image, "label": label}
            supervised_keys = ("image", "label")
        # DatasetInfo directly, not dataset_info_from_configs: that one reads README.md / CITATIONS.bib from this
        # module's folder, which documents the package, not this dataset.
        return tfds.core.DatasetInfo(builder=self, description=__doc__.split("\n\n")[0],
                                     features=tfds.features.FeaturesDict(features),
                                     supervised_keys=supervised_keys, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager  # generated, nothing to download
        config = self.builder_config
        return {"train": self._generate_examples("train", config.num_train),
                "validation": self._generate_examples("validation", config.num_validation)}

    def _generate_examples(self, split: str, num_examples: int):
        # Images go in as PNG bytes from PIL at zlib level 1: TFDS's own encoder (tf.io.encode_png, level 6) takes
        # about 40 ms per 256 x 256 image, ten times the generation itself. The pixels are the same.
        config = self.builder_config
        for index in range(num_examples):
            if config.task == "detection":
                features = _detection_features(generate_example(index, split, config.image_size), with_masks=True)
                features["image"] = _png(features["image"])
                objects = features["objects"]
                objects["segmentation"] = [_png(mask[..., 0]) for mask in objects["segmentation"]]
            else:
                example = generate_classification_example(index, split, config.image_size)
                features = {"image": _png(example["image"]), "label": example["label"]}
            yield index, features


# === COCO JSON ===

def write_coco_json(split: str, path: str | os.PathLike, image_dir: str | os.PathLike,
                    num_examples: int | None = None, image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE,
                    image_format: str = "png") -> dict:
    """Writes detection examples of `split` as image files plus one COCO instances JSON file.

    The JSON has `images` (id, file_name relative to `image_dir`, height, width), `annotations` (id, image_id,
    category_id = class index + 1, bbox `[x, y, w, h]` in pixels, area = visible mask pixels, iscrowd 0,
    segmentation as compressed RLE) and `categories` (ids 1..NUM_CLASSES, names `CLASS_NAMES`). It loads with
    `pycocotools.coco.COCO(path)`, for COCOeval, and is the format users have for their own data.

    Args:
        split, num_examples, image_size: As `as_dataset`.
        path: The JSON file to write; its folder is created.
        image_dir: Where images go (created), named f"{image_id:012d}.png" (or ".jpg").
        image_format: "png" (lossless: pixels equal `generate_example`'s) or "jpeg" (quality 95).

    Returns:
        The COCO dict that was written.
    """
    formats = {"png": ("png", {"compress_level": 1}), "jpeg": ("jpg", {"quality": 95})}
    if image_format not in formats:
        raise ValueError(f"image_format={image_format!r}: must be 'png' or 'jpeg'")
    extension, save_options = formats[image_format]
    split = _canonical_split(split)
    size = _image_size(image_size)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for index in range(_num_examples(split, num_examples)):
        example = generate_example(index, split, size)
        features = _detection_features(example, with_masks=False)
        file_name = _file_name(example["image_id"], extension)
        Image.fromarray(example["image"]).save(os.path.join(image_dir, file_name), format=image_format,
                                               **save_options)
        images.append({"id": example["image_id"], "file_name": file_name, "height": size[0], "width": size[1]})
        objects = features["objects"]
        for k, (ymin, xmin, ymax, xmax) in enumerate(example["boxes"].tolist()):
            rle = mask_utils.encode(np.asfortranarray(example["masks"][k]))
            annotations.append({
                "id": int(objects["id"][k]), "image_id": example["image_id"],
                "category_id": int(example["classes"][k]) + 1,
                "bbox": [xmin, ymin, xmax - xmin, ymax - ymin], "area": int(objects["area"][k]), "iscrowd": 0,
                "segmentation": {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")},
            })
    coco = {
        "info": {"description": f"spinenet_tf builtin_shapes, {split} split", "version": "1.0.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES)],
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(coco, f)
    return coco
