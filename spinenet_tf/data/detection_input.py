"""The RetinaNet input pipeline: decoded examples -> normalised, augmented, padded images and anchor targets.

Mirrors Model Garden's `official/vision/dataloaders/retinanet_input.py` parser with `preprocess_ops`
(resize_and_crop_image, horizontal flip, normalize_image) and the SpineNet paper's training protocol (§5.1:
horizontal flip and scale jitter, 0.5-2.0 by default). TensorFlow ops only, for `tf.data`.

Examples come in the TFDS `coco/2017` layout, which every data source of ours produces:
`{"image": uint8 [H, W, 3], "image/id": int64, "objects": {"bbox": float32 [G, 4] normalised (ymin, xmin, ymax,
xmax), "label": int64 [G], "is_crowd": bool [G]}}`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from spinenet_tf.detection import targets as targets_lib

# ImageNet statistics on [0, 255] images (Model Garden `preprocess_ops.MEAN_RGB`, `STDDEV_RGB`).
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclasses.dataclass(frozen=True)
class DetectionInputConfig:
    """How images and boxes are prepared.

    Attributes:
        image_size: (H, W) of the model input.
        max_instances: Ground truth is padded (or cut) to this many boxes per image (MG: 100).
        aug_scale_min, aug_scale_max: Scale jitter range in training (paper protocol: 0.5-2.0; MG configs 0.1-2.0).
        horizontal_flip: Random left-right flip in training.
        skip_crowd: Drop `is_crowd` boxes from training targets (MG: True).
        label_offset: Added to dataset labels to get the head's class channel (0 by default; 1 leaves channel 0
            unused, as Model Garden's COCO heads do).
        positive_threshold, negative_threshold: Anchor matching IoUs (paper: 0.5 / 0.4).
    """

    image_size: tuple[int, int]
    max_instances: int = 100
    aug_scale_min: float = 0.5
    aug_scale_max: float = 2.0
    horizontal_flip: bool = True
    skip_crowd: bool = True
    label_offset: int = 0
    positive_threshold: float = 0.5
    negative_threshold: float = 0.4


def normalize_image(image: tf.Tensor) -> tf.Tensor:
    """uint8 or float [0, 255] RGB -> (x - mean) / std with ImageNet statistics (Model Garden's normalisation)."""
    image = tf.cast(image, tf.float32)
    return (image - tf.constant(MEAN_RGB)) / tf.constant(STDDEV_RGB)


def resize_and_pad(image: tf.Tensor, output_size: Sequence[int], scale_min: float = 1.0, scale_max: float = 1.0,
                   seed=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Resizes keeping the aspect ratio so the image fits `output_size` (times a random scale), crops at a random
    offset if larger, pads bottom/right with zeros.

    Returns:
        The [H_out, W_out, C] image and `image_info` float32 [4, 2]: original (h, w), scaled (h, w), (y, x) scale,
        (y, x) crop offset — Model Garden's layout, used to map boxes back to the original image.
    """
    output_size = tf.constant(output_size, tf.float32)
    original = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.minimum(output_size[0] / original[0], output_size[1] / original[1])
    if scale_min != 1.0 or scale_max != 1.0:
        scale *= tf.random.uniform([], scale_min, scale_max, seed=seed)
    scaled = tf.round(original * scale)
    image_scale = scaled / original
    max_offset = tf.maximum(scaled - output_size, 0.0)
    offset = tf.floor(max_offset * tf.random.uniform([2], 0, 1, seed=seed)) if scale_max > 1.0 else tf.zeros([2])
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.cast(scaled, tf.int32), method="bilinear")
    offset_int = tf.cast(offset, tf.int32)
    out_int = tf.cast(output_size, tf.int32)
    cropped = resized[offset_int[0]:offset_int[0] + out_int[0], offset_int[1]:offset_int[1] + out_int[1]]
    padded = tf.image.pad_to_bounding_box(cropped, 0, 0, out_int[0], out_int[1])
    info = tf.stack([original, scaled, image_scale, offset])
    return padded, info


def transform_boxes(boxes: tf.Tensor, image_info: tf.Tensor, output_size: Sequence[int]) -> tf.Tensor:
    """Pixel boxes of the original image -> boxes in the resized, cropped model input, clipped to the image part."""
    scaled = boxes * tf.tile(image_info[2], [2]) - tf.tile(image_info[3], [2])
    limit = tf.minimum(image_info[1] - image_info[3], tf.constant(output_size, tf.float32))
    return tf.clip_by_value(scaled, 0.0, tf.tile(limit, [2]))


def to_original_pixels(boxes, image_info) -> np.ndarray:
    """Inverse of `transform_boxes` (without its clip): model-input boxes [..., 4] -> original-image pixels."""
    image_info = np.asarray(image_info)
    return (np.asarray(boxes) + np.tile(image_info[3], 2)) / np.tile(image_info[2], 2)


def _pad(tensor: tf.Tensor, size: int, value) -> tf.Tensor:
    tensor = tensor[:size]
    padding = [[0, size - tf.shape(tensor)[0]]] + [[0, 0]] * (tensor.shape.rank - 1)
    return tf.pad(tensor, padding, constant_values=value)


class DetectionInput:
    """Builds the per-example functions `train_fn` / `eval_fn` for `tf.data.Dataset.map`.

    Args:
        config: The `DetectionInputConfig`.
        anchor_boxes: The model's flat anchors `[N, 4]` (`RetinaNet.anchor_boxes`).

    Example:
        parser = DetectionInput(DetectionInputConfig((256, 256)), model.anchor_boxes)
        train = dataset.map(parser.train_fn).batch(8)        # (image, targets) pairs for model.fit
    """

    def __init__(self, config: DetectionInputConfig, anchor_boxes: np.ndarray):
        self.config = config
        self.anchor_boxes = np.asarray(anchor_boxes, np.float32)

    def _ground_truth(self, example, training: bool):
        objects = example["objects"]
        height = tf.cast(tf.shape(example["image"])[0], tf.float32)
        width = tf.cast(tf.shape(example["image"])[1], tf.float32)
        boxes = tf.reshape(tf.cast(objects["bbox"], tf.float32), [-1, 4]) * tf.stack([height, width, height, width])
        classes = tf.cast(objects["label"], tf.int32) + self.config.label_offset
        if training and self.config.skip_crowd and "is_crowd" in objects:
            keep = tf.logical_not(tf.cast(objects["is_crowd"], tf.bool))
            boxes, classes = tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)
        return boxes, classes

    def augment(self, example):
        """Flip, scale-jitter, crop and pad one example: (image [H, W, 3] float 0-255, boxes [M, 4] in model-input
        pixels, classes [M]), padded to `max_instances` with zero boxes and class -1."""
        config = self.config
        image = example["image"]
        boxes, classes = self._ground_truth(example, training=True)
        if config.horizontal_flip:
            flip = tf.random.uniform([]) > 0.5
            width = tf.cast(tf.shape(image)[1], tf.float32)
            image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
            boxes = tf.cond(flip, lambda: tf.stack([boxes[:, 0], width - boxes[:, 3], boxes[:, 2],
                                                    width - boxes[:, 1]], axis=1), lambda: boxes)
        image, info = resize_and_pad(image, config.image_size, config.aug_scale_min, config.aug_scale_max)
        boxes = transform_boxes(boxes, info, config.image_size)
        # Boxes cropped away (or degenerate after clipping) are dropped, as Model Garden's parser does.
        keep = tf.logical_and(boxes[:, 2] > boxes[:, 0], boxes[:, 3] > boxes[:, 1])
        boxes, classes = tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)
        return image, _pad(boxes, config.max_instances, 0.0), _pad(classes, config.max_instances, -1)

    def train_fn(self, example):
        """One training example -> (normalised image [H, W, 3], targets dict of `assign_targets`)."""
        image, boxes, classes = self.augment(example)
        targets = targets_lib.assign_targets(self.anchor_boxes, boxes, classes,
                                             positive_threshold=self.config.positive_threshold,
                                             negative_threshold=self.config.negative_threshold)
        return normalize_image(image), targets

    def eval_fn(self, example):
        """One evaluation example -> (normalised image, labels) with the image id, `image_info` and padded
        ground truth in original-image pixels (for COCO evaluation)."""
        config = self.config
        image, info = resize_and_pad(example["image"], config.image_size)
        boxes, classes = self._ground_truth(example, training=False)
        labels = {"image_id": tf.cast(example.get("image/id", -1), tf.int64), "image_info": info,
                  "gt_boxes": _pad(boxes, config.max_instances, 0.0),
                  "gt_classes": _pad(classes, config.max_instances, -1)}
        if "is_crowd" in example["objects"]:
            labels["gt_is_crowd"] = _pad(tf.cast(example["objects"]["is_crowd"], tf.int32), config.max_instances, 0)
        return normalize_image(image), labels
