"""Bad data never ends a run: counted, logged once, skipped or repaired (`DataStats`, `decode_image`, `repair_boxes`).

Every file-based reader of `spinenet_tf.data.sources` decodes images in one guarded Python step (PIL inside
`tf.numpy_function`) that turns every failure into a skipped example, instead of an op error that would stop
`tf.data`: a missing or undecodable image is skipped; grayscale, palette, RGBA, CMYK and 16-bit images become RGB;
boxes past the image edge are clipped; boxes with no area after clipping, unknown labels and non-finite boxes are
dropped. Each item is counted once in a `DataStats` and logged once (absl), naming the file, record or annotation.
Instance masks (task "instance_segmentation") have their own kinds, repaired or dropped by `instance_masks`.

Why PIL and not `tf.io.decode_image` plus `Dataset.ignore_errors`: a TF decode error cannot be caught inside the
graph, and `ignore_errors` drops the element without saying which file it was or counting it; PIL also says which
colour mode it converted, where `decode_image(channels=3)` converts silently. The price is CPU time: PIL decodes
about as fast as TF and releases the GIL while it does, but the Python step around it about doubles the cost per
image; one core still feeds far more images per second than a CPU training step consumes.
"""

from __future__ import annotations

import collections
import io
import threading

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

TASKS = ("detection", "instance_segmentation", "classification")

# What `DataStats` counts, and how `summary()` says it.
STAT_KINDS = {
    "missing_image": "missing images skipped",
    "corrupt_image": "undecodable images skipped",
    "size_mismatch": "images of another size than annotated skipped",
    "bad_record": "unreadable records skipped",
    "bad_annotation": "malformed annotations dropped",
    "unknown_category": "annotations of unknown categories dropped",
    "missing_label": "examples without a valid label skipped",
    "degenerate_box": "boxes without area dropped",
    "box_clipped": "boxes clipped to the image",
    "bad_mask": "annotations without a usable mask dropped",
    "bad_polygon": "malformed polygons left out of masks",
    "self_intersecting": "self-intersecting polygons filled even-odd",
    "mask_clipped": "masks clipped to the image",
    "converted_to_rgb": "images converted to RGB",
    "no_annotations": "images without annotations kept as negatives",
}

_MODE_NAMES = {"L": "grayscale", "LA": "grayscale+alpha", "P": "palette", "PA": "palette+alpha", "1": "1-bit",
               "RGBA": "RGBA", "CMYK": "CMYK", "I;16": "16-bit grayscale", "I": "32-bit grayscale"}


class DataStats:
    """What a loaded source skipped or repaired: counts per kind (`STAT_KINDS`) and one log line per item.

    Each item (a file, a record, an annotation id, a box) is counted once however many epochs read it, and logged
    once, up to `max_logged` lines per kind. Thread-safe: the decode step runs on several tf.data threads.

    Args:
        source: How log lines start, e.g. "--train_data".
        max_logged: Log lines per kind before further items are only counted.
    """

    def __init__(self, source: str = "", max_logged: int = 100):
        self.source = source
        self.max_logged = max_logged
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()
        self._counts = collections.Counter()

    def record(self, kind: str, item: str, message: str | None = None, *, log: bool = True) -> bool:
        """Counts `item` under `kind` and logs `message` about it, the first time only. Returns whether it was new."""
        if kind not in STAT_KINDS:
            raise ValueError(f"unknown DataStats kind {kind!r}; valid: {', '.join(STAT_KINDS)}")
        with self._lock:
            if (kind, item) in self._seen:
                return False
            self._seen.add((kind, item))
            self._counts[kind] += 1
            count = self._counts[kind]
        if log and message and count <= self.max_logged:
            logging.warning("%s: %s: %s%s", self.source, item, message,
                            f" (further {kind} items are counted, not logged)" if count == self.max_logged else "")
        return True

    def count(self, kind: str) -> int:
        with self._lock:
            return self._counts[kind]

    def as_dict(self) -> dict[str, int]:
        """{kind: count} for every kind in `STAT_KINDS`, zeros included (for metrics files)."""
        with self._lock:
            return {kind: self._counts[kind] for kind in STAT_KINDS}

    def summary(self) -> str:
        """One line, e.g. "2 undecodable images skipped, 3 boxes clipped to the image"; "" if nothing happened."""
        counts = self.as_dict()
        return ", ".join(f"{counts[kind]} {text}" for kind, text in STAT_KINDS.items() if counts[kind])

    def __repr__(self) -> str:
        return f"DataStats({self.source!r}: {self.summary() or 'nothing skipped or repaired'})"


def read_file(path: str) -> bytes:
    """The bytes of a local file (plain `open`, GIL-free reads) or of a `gs://`-style path (`tf.io.gfile`)."""
    if "://" in path:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit (or wider) grayscale: PIL's convert("RGB") would clip at 255, so scale to 8 bits.
        array = np.asarray(image, np.float64)
        array = array * (255.0 / 65535.0) if array.max() > 255 else array
        return np.repeat(np.clip(np.round(array), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    # Alpha is dropped, not composited: what tf.io.decode_image(channels=3) and TFDS do.
    return np.asarray(image.convert("RGB"))


def decode_image(data: bytes, name: str, stats: DataStats) -> np.ndarray | None:
    """Decodes encoded image bytes to uint8 RGB `[H, W, 3]`, or returns None (counted, logged) if that fails.

    Other colour modes (grayscale, palette, RGBA, CMYK, 16-bit) are converted and counted as `converted_to_rgb`.
    Truncated files are errors (PIL's LOAD_TRUNCATED_IMAGES is not set), not grey-filled images.

    Args:
        data: The file's bytes (JPEG, PNG, or anything else PIL reads).
        name: What the log line calls it (a path, a record).
        stats: Where the outcome is counted.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            array = np.asarray(image) if mode == "RGB" else _to_rgb(image)
    except Image.UnidentifiedImageError:
        stats.record("corrupt_image", name, "cannot decode the image (not an image format PIL reads); skipped")
        return None
    except Exception as e:  # whatever PIL raises (OSError, SyntaxError, ...), the image is unusable
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        stats.record("corrupt_image", name, f"cannot decode the image ({reason}); skipped")
        return None
    if array.ndim != 3 or array.shape[2] != 3 or not array.size:
        stats.record("corrupt_image", name, f"decoded to shape {array.shape}, not an RGB image; skipped")
        return None
    if mode != "RGB":
        stats.record("converted_to_rgb", name, f"{_MODE_NAMES.get(mode, mode)} image converted to RGB")
    return np.ascontiguousarray(array, np.uint8)


def repair_boxes(boxes: np.ndarray, labels: np.ndarray, is_crowd: np.ndarray, names: list[str], limits,
                 stats: DataStats, num_classes: int | None = None, units: str = "", masks=None):
    """Clips boxes to the image and drops the ones without area, with a bad label or with non-finite values.

    Args:
        boxes: `[G, 4]` (ymin, xmin, ymax, xmax) in the units of `limits`.
        labels, is_crowd: `[G]`.
        names: `[G]` names of the boxes for the log ("annotation 17 (000000000001.jpg)").
        limits: (height, width) of the image in the boxes' units: pixels, or (1, 1) for normalised boxes.
        stats: Where repairs are counted.
        num_classes: Labels must be below it (when given) and never negative.
        units: " px" (appended to the printed image size) or "normalised" (limits (1, 1)).
        masks: `[G, ...]` masks (an array, or a list of RLE counts), one per box, kept with their boxes.

    Returns:
        (boxes float32 [K, 4], labels int64 [K], is_crowd bool [K]) of the boxes kept, clipped; with `masks`,
        their masks as a fourth element (an array, or a list).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    is_crowd = np.asarray(is_crowd, bool).reshape(-1)
    height, width = limits
    image = "image (normalised coordinates)" if units == "normalised" else f"{height:g}x{width:g}{units} image"
    clipped = np.clip(boxes, 0.0, [height, width, height, width])
    keep = np.ones(len(boxes), bool)
    for k, (box, new) in enumerate(zip(boxes, clipped)):
        shown = "(ymin, xmin, ymax, xmax) [" + ", ".join(f"{v:.4g}" for v in box) + "]"
        if not np.all(np.isfinite(box)):
            stats.record("bad_annotation", names[k], f"box {shown} is not finite; dropped")
        elif labels[k] < 0 or (num_classes is not None and labels[k] >= num_classes):
            valid = f"in [0, {num_classes})" if num_classes is not None else "a class index (>= 0)"
            stats.record("unknown_category", names[k], f"label {labels[k]} is not {valid}; dropped")
        elif new[2] <= new[0] or new[3] <= new[1]:
            stats.record("degenerate_box", names[k], f"box {shown} has no area inside the {image}; dropped")
        else:
            if np.any(new != box):
                stats.record("box_clipped", names[k], f"box {shown} clipped to the {image}")
            continue
        keep[k] = False
    kept = clipped[keep].astype(np.float32), labels[keep], is_crowd[keep]
    if masks is None:
        return kept
    return (*kept, masks[keep] if isinstance(masks, np.ndarray) else [m for m, k in zip(masks, keep) if k])


def skipped(task: str) -> tuple:
    """The `(ok=False, ...)` result of a guarded read that skips its example: empty arrays of the layout's dtypes
    and ranks (detection: ok, image, image id, boxes, labels, is_crowd; instance_segmentation: those and masks
    uint8 [G, H, W, 1]; classification: ok, image, label)."""
    image = np.zeros((0, 0, 3), np.uint8)
    if task == "classification":
        return False, image, np.int64(-1)
    boxes = (False, image, np.int64(-1), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
    return boxes if task == "detection" else (*boxes, np.zeros((0, 0, 0, 1), np.uint8))
