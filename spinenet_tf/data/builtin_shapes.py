"""The built-in dataset's generator: shapes on textured backgrounds, drawn in numpy, for detection and classification.

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

This module draws (`generate_example`, `generate_classification_example`: numpy dicts). The same examples in the
TFDS `coco/2017` feature layout of every data source: `builtin_shapes_dataset` (`tf.data`, and the
`builtin:shapes` source through `builtin_reader`), `builtin_shapes_tfds` (the TFDS builder `builtin_shapes`),
`builtin_shapes_coco` (image files plus a COCO annotation file).
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

CLASS_NAMES = ("rectangle", "ellipse", "triangle", "cross", "star", "ring")
NUM_CLASSES = len(CLASS_NAMES)
DEFAULT_IMAGE_SIZE = (256, 256)
SPLIT_SIZES = {"train": 2000, "validation": 200}  # default examples per split, for detection and classification
MAX_EXAMPLES = 10_000_000       # per split; validation ids start after the largest possible train id
TASKS = ("detection", "classification")

MAX_OBJECTS = 5
MIN_OBJECT_SIZE = 12            # pixels, the long side of the smallest (near-square) shapes
MIN_SHORT_SIDE = 8              # pixels; elongated shapes have a longer long side, so they stay recognisable
MAX_OBJECT_FRACTION = 0.6       # long side, as a fraction of the image's shorter side
ASPECT_RATIO_RANGE = (0.4, 2.5)  # width / height of the drawn shape's box (log-uniform)
MIN_VISIBLE_FRACTION = 0.5
CLASSIFICATION_SIZE_RANGE = (0.3, 0.75)  # long side / shorter image side, one shape per image

_SEED = 20240501
_TASK_CODES = {task: code for code, task in enumerate(TASKS)}
_SPLIT_CODES = {"train": 0, "validation": 1}
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation"}
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
    under 32 px): about a third of the boxes are COCO-small (area < 32^2), which keeps the demo's AP target in
    reach while small objects still matter.
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
    BLAS: a multi-threaded BLAS `@` is far slower for this thin product when the cores are busy, and data
    generation runs next to training threads.
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


def canonical_split(split: str) -> str:
    """"train" or "validation" for a split name ("val" is accepted); a ValueError for any other."""
    if split not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; valid splits are 'train' and 'validation' (or 'val')")
    return _SPLIT_ALIASES[split]


def checked_image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) of an `image_size` given as (H, W) or one int; a ValueError when a side is under 64 pixels."""
    height, width = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    if min(height, width) < 64:
        raise ValueError(f"image_size={image_size!r}: both sides must be at least 64 pixels")
    return int(height), int(width)


def split_size(split: str, num_examples: int | None = None) -> int:
    """Examples to read from `split`: `num_examples`, checked, or the split's `SPLIT_SIZES` when None."""
    if num_examples is None:
        return SPLIT_SIZES[canonical_split(split)]
    if not 0 < num_examples <= MAX_EXAMPLES:
        raise ValueError(f"num_examples={num_examples}: must be in [1, {MAX_EXAMPLES}]")
    return int(num_examples)


def _rng_and_id(task: str, split: str, index: int) -> tuple[np.random.Generator, int]:
    split = canonical_split(split)
    if not 0 <= index < MAX_EXAMPLES:
        raise ValueError(f"index={index}: must be in [0, {MAX_EXAMPLES})")
    rng = np.random.default_rng((_SEED, _TASK_CODES[task], _SPLIT_CODES[split], int(index)))
    return rng, _SPLIT_CODES[split] * MAX_EXAMPLES + int(index) + 1


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
    height, width = checked_image_size(image_size)
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
    height, width = checked_image_size(image_size)
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
