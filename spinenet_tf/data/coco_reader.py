"""The `coco:ANNOTATIONS.json:IMAGE_DIR` source: COCO-format annotation files (the format of users' own data) read
through a checked, repaired index of images and boxes.

`cached_index(annotation_file, image_dir)` parses the JSON once per process and file version into flat arrays;
`CocoIndex.read(position, stats)` reads one image in the guarded `tf.data` step (`reading.guarded`) of `read`,
the reader `sources.load` calls. Categories map to contiguous class indices in sorted id order, with
the names of the file; image ids are kept. What the index repairs (`bad_data`): boxes clipped to the image,
boxes without area, unknown category ids and malformed entries dropped, images without annotations kept as
negatives; at read time a missing, undecodable or wrongly sized image is skipped.

Built `with_masks`, the index also holds each kept annotation's `segmentation` (polygons or RLE, crowd ones
included) checked, repaired and rasterised once into a compressed RLE (`instance_masks`); annotations without a
usable mask are dropped. `CocoIndex.read` then expands the image's RLEs to masks.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import os
import threading

import numpy as np
import tensorflow as tf
from PIL import Image

from spinenet_tf.data import bad_data, instance_masks
from spinenet_tf.data.reading import DataInfo, Reading, Source, guarded, shard_and_shuffle


class CocoFormatError(ValueError):
    """The annotation file is not COCO JSON at all (as opposed to bad entries, which are skipped)."""


@dataclasses.dataclass(frozen=True)
class CocoIndex:
    """A COCO annotation file, checked and repaired, as flat arrays: image i's boxes are `offsets[i]:offsets[i + 1]`.

    Attributes:
        paths: Image files, `image_dir/file_name`.
        image_ids: int64 [N], the file's image ids.
        sizes: int64 [N, 2] (height, width) from the file (or the image header where the file has none).
        offsets: int64 [N + 1].
        boxes: float32 [M, 4] normalised (ymin, xmin, ymax, xmax), clipped.
        labels: int64 [M] class indices; `is_crowd`: bool [M].
        class_names, category_ids: By class index; class k is category `category_ids[k]`.
        events: (kind, item, message) of what indexing skipped or repaired, for each load's `DataStats`.
        masks: Built `with_masks`: [M] compressed RLE counts of each box's mask at its image's size; else None.
    """

    annotation_file: str
    paths: tuple[str, ...]
    image_ids: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    is_crowd: np.ndarray
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    events: tuple[tuple[str, str, str | None], ...]
    masks: tuple[bytes, ...] | None = None

    @property
    def task(self) -> str:
        return "detection" if self.masks is None else "instance_segmentation"

    def read(self, position, stats: bad_data.DataStats) -> tuple:
        """Image `position` as the guarded step's `(ok, image, image_id, boxes, labels, is_crowd)` (numpy), and
        `masks` uint8 [G, H, W, 1] (0 or 255) when the index has masks."""
        i = int(position)
        path = self.paths[i]
        try:
            data = bad_data.read_file(path)
        except (OSError, tf.errors.OpError) as e:
            stats.record("missing_image", path, f"cannot read the image file ({type(e).__name__}); skipped")
            return bad_data.skipped(self.task)
        image = bad_data.decode_image(data, path, stats)
        if image is None:
            return bad_data.skipped(self.task)
        height, width = self.sizes[i]
        if image.shape[:2] != (height, width):
            stats.record("size_mismatch", path, f"the image is {image.shape[0]}x{image.shape[1]} but "
                         f"{os.path.basename(self.annotation_file)} says {height}x{width}; skipped")
            return bad_data.skipped(self.task)
        boxes = slice(self.offsets[i], self.offsets[i + 1])
        example = (True, image, self.image_ids[i], self.boxes[boxes], self.labels[boxes], self.is_crowd[boxes])
        if self.masks is None:
            return example
        return (*example, instance_masks.decode_rles(self.masks[boxes], int(height), int(width)))


class _EventLog:
    """Stands in for `DataStats` while an index is built: keeps the events, to replay them into each load's stats."""

    def __init__(self):
        self.events: list[tuple[str, str, str | None]] = []

    def record(self, kind: str, item: str, message: str | None = None) -> None:
        self.events.append((kind, item, message))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _size_from_header(path: str) -> tuple[int, int] | None:
    try:
        with Image.open(path if "://" not in path else tf.io.gfile.GFile(path, "rb")) as image:
            return image.size[1], image.size[0]
    except Exception:  # unreadable or missing: the caller skips the image
        return None


def _index_images(entries, image_dir: str, log: _EventLog) -> dict[int, tuple[str, int, int]]:
    """`images` entries -> {image id: (path, height, width)}; malformed and duplicate entries are skipped."""
    images = {}
    for position, entry in enumerate(entries):
        image_id = entry.get("id") if isinstance(entry, dict) else None
        file_name = entry.get("file_name") if isinstance(entry, dict) else None
        if not _is_int(image_id) or not isinstance(file_name, str):
            log.record("bad_annotation", f"images[{position}]", "needs an integer 'id' and a 'file_name'; skipped")
            continue
        if image_id in images:
            log.record("bad_annotation", f"images[{position}]", f"duplicate image id {image_id}; skipped")
            continue
        path = os.path.join(image_dir, file_name)
        height, width = entry.get("height"), entry.get("width")
        if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
            size = _size_from_header(path)  # the file lacks the size: the image's header has it
            if size is None:
                log.record("missing_image" if not tf.io.gfile.exists(path) else "corrupt_image", path,
                           "no height/width in the annotation file and the image cannot be read; skipped")
                continue
            height, width = size
        images[image_id] = (path, height, width)
    return images


def _categories(data: dict, annotation_file: str) -> tuple[tuple[int, ...], dict[int, str]]:
    categories = data.get("categories")
    if not isinstance(categories, list) or not categories or not all(
            isinstance(c, dict) and _is_int(c.get("id")) for c in categories):
        raise CocoFormatError(f"annotation file {annotation_file} needs a 'categories' list with integer ids")
    names_by_id = {c["id"]: str(c.get("name", c["id"])) for c in categories}
    if len(names_by_id) != len(categories):
        raise CocoFormatError(f"annotation file {annotation_file} repeats a category id")
    return tuple(sorted(names_by_id)), names_by_id


def build_index(annotation_file: str, image_dir: str, with_masks: bool = False) -> CocoIndex:
    """Parses and checks a COCO annotation file (see the module docstring for what is repaired).

    Args:
        annotation_file, image_dir: The JSON file and the folder its `file_name`s are relative to.
        with_masks: Also rasterise each annotation's `segmentation` (`CocoIndex.masks`).

    Raises:
        CocoFormatError: The file is not JSON, has no `images` list or no usable `categories`.
    """
    try:
        with tf.io.gfile.GFile(annotation_file, "r") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoFormatError(f"annotation file {annotation_file} is not JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CocoFormatError(f"annotation file {annotation_file} has no 'images' list; not COCO format")
    category_ids, names_by_id = _categories(data, annotation_file)
    class_of = {category: k for k, category in enumerate(category_ids)}
    shown_ids = ", ".join(map(str, category_ids[:10])) + (", ..." if len(category_ids) > 10 else "")

    log = _EventLog()
    images = _index_images(data["images"], image_dir, log)
    found = collections.defaultdict(list)   # image id -> [(name, pixel box (ymin, xmin, ymax, xmax), class, crowd,
    #                                                  mask RLE or None)]
    for position, annotation in enumerate(data.get("annotations") or []):
        if not isinstance(annotation, dict):
            log.record("bad_annotation", f"annotations[{position}]", "not an object; dropped")
            continue
        name = f"annotation {annotation.get('id', f'#{position}')}"
        image_id, category, bbox = annotation.get("image_id"), annotation.get("category_id"), annotation.get("bbox")
        if not _is_int(image_id) or image_id not in images:
            log.record("bad_annotation", name, f"image_id {image_id!r} is not in 'images'; dropped")
            continue
        name = f"{name} ({os.path.basename(images[image_id][0])})"
        if not _is_int(category) or category not in class_of:
            log.record("unknown_category", name, f"unknown category_id {category!r} (categories: {shown_ids}); dropped")
            continue
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            log.record("bad_annotation", name, f"bbox {bbox!r} is not [x, y, width, height]; dropped")
            continue
        mask = None
        if with_masks:
            _, height, width = images[image_id]
            mask = instance_masks.coco_segmentation_to_rle(annotation.get("segmentation"), height, width, name, log)
            if mask is None:
                continue
        x, y, w, h = bbox
        found[image_id].append((name, (y, x, y + h, x + w), class_of[category], bool(annotation.get("iscrowd", 0)),
                                mask))

    paths, image_ids, sizes, offsets, boxes, labels, crowds, masks = [], [], [], [0], [], [], [], []
    for image_id, (path, height, width) in images.items():
        names, pixel_boxes, classes, crowd, rles = zip(*found[image_id]) if found[image_id] else ((),) * 5
        kept_boxes, kept_labels, kept_crowd, kept_rles = bad_data.repair_boxes(
            pixel_boxes, classes, crowd, list(names), (height, width), log, units=" px", masks=list(rles))
        if not len(kept_labels):
            log.record("no_annotations", path)
        paths.append(path)
        image_ids.append(image_id)
        sizes.append((height, width))
        boxes.append(kept_boxes / np.array([height, width, height, width], np.float32))
        labels.append(kept_labels)
        crowds.append(kept_crowd)
        masks.extend(kept_rles)
        offsets.append(offsets[-1] + len(kept_labels))
    return CocoIndex(
        annotation_file=annotation_file, paths=tuple(paths), image_ids=np.array(image_ids, np.int64),
        sizes=np.array(sizes, np.int64).reshape(-1, 2), offsets=np.array(offsets, np.int64),
        boxes=np.concatenate([np.zeros((0, 4), np.float32), *boxes]).astype(np.float32),
        labels=np.concatenate([np.zeros(0, np.int64), *labels]).astype(np.int64),
        is_crowd=np.concatenate([np.zeros(0, bool), *crowds]).astype(bool),
        class_names=tuple(names_by_id[c] for c in category_ids), category_ids=category_ids, events=tuple(log.events),
        masks=tuple(masks) if with_masks else None)


_INDICES: dict[tuple, CocoIndex] = {}   # (file, image_dir, mtime, size, with_masks) -> index; a new file version: anew
_INDICES_LOCK = threading.Lock()
_MAX_INDICES = 4


def cached_index(annotation_file: str, image_dir: str, with_masks: bool = False) -> tuple[CocoIndex, bool]:
    """`build_index`, once per process and file version (a training run loads its source more than once; large
    files take long to parse); also whether this call built it, so its events are logged the first time only."""
    stat = tf.io.gfile.stat(annotation_file)
    key = (annotation_file, image_dir, stat.mtime_nsec, stat.length, with_masks)
    with _INDICES_LOCK:
        if key in _INDICES:
            return _INDICES[key], False
    index = build_index(annotation_file, image_dir, with_masks)
    with _INDICES_LOCK:
        while len(_INDICES) >= _MAX_INDICES:
            _INDICES.pop(next(iter(_INDICES)))
        _INDICES[key] = index
    return index, True


def read(source: Source, reading: Reading) -> tuple[tf.data.Dataset, DataInfo]:
    """The images of `source.annotation_file` in `reading.task`'s layout (detection or instance_segmentation), and
    its categories as contiguous class indices."""
    if reading.task == "classification":
        raise source.error("COCO annotation files hold detection data; for classification use builtin:, tfds: "
                           "or tfrecord:")
    try:
        index, new = cached_index(source.annotation_file, source.image_dir,
                                  with_masks=reading.task == "instance_segmentation")
    except CocoFormatError as e:
        raise source.error(str(e)) from None
    for kind, item, message in index.events:
        reading.stats.record(kind, item, message, log=new)
    count = len(index.paths)
    positions = shard_and_shuffle(tf.data.Dataset.range(count), count, reading)
    dataset = guarded(positions, functools.partial(index.read, stats=reading.stats), reading)
    return dataset, DataInfo(num_classes=len(index.category_ids), class_names=index.class_names,
                             num_examples=count, category_ids=index.category_ids)
