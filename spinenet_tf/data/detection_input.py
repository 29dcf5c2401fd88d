"""The RetinaNet input pipeline: decoded examples -> normalised, augmented, padded images and anchor targets.

Mirrors Model Garden's `official/vision/dataloaders/retinanet_input.py` parser with `preprocess_ops`
(resize_and_crop_image, horizontal flip, normalize_image) and the SpineNet paper's training protocol (§5.1:
horizontal flip and scale jitter, 0.5-2.0 by default). TensorFlow ops only, for `tf.data`.

Examples come in the TFDS `coco/2017` layout, which every data source of ours produces:
`{"image": uint8 [H, W, 3], "image/id": int64, "objects": {"bbox": float32 [G, 4] normalised (ymin, xmin, ymax,
xmax), "label": int64 [G], "is_crowd": bool [G]}}`.

Instance masks (`include_masks`, for Mask R-CNN; `objects/segmentation` uint8 [G, H, W, 1] from
`sources.load(..., "instance_segmentation")`) follow Model Garden's `maskrcnn_input.py`: each mask is cropped to
its (augmented) box and resized to `mask_crop_size` squared, sampling the original mask, so no full-size mask is
ever flipped or resized. Unlike MG's `tf.image.crop_and_resize` (samples on the box corners), the samples are the
centres of the M x M cells that tile the box (`mask_ops.crop_masks`), the convention of
`maskrcnn_targets.crop_masks_in_boxes`, which resamples these crops inside the RoIs; `mask_ops.paste_masks` is the
inverse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from spinenet_tf.detection import box_ops, mask_ops
from spinenet_tf.detection import targets as targets_lib
from spinenet_tf.detection.maskrcnn import targets as maskrcnn_targets

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
        include_masks: Crop the examples' instance masks into their boxes (`augment`, `instance_train_fn`,
            `eval_fn`); examples must have `objects/segmentation`.
        mask_crop_size: M, the side of the cropped masks (MG: 112).
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
    include_masks: bool = False
    mask_crop_size: int = 112


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
        (y, x) crop offset — Model Garden's layout, with which `box_ops` maps boxes to and from the original image.
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

    def _masks(self, example):
        if "segmentation" not in example["objects"]:
            raise ValueError("DetectionInputConfig.include_masks: the examples have no objects/segmentation; load "
                             "the source with task 'instance_segmentation'")
        return example["objects"]["segmentation"]

    def _ground_truth(self, example, training: bool):
        """(pixel boxes, classes, masks or None) of the original image; crowd ones dropped in training."""
        objects = example["objects"]
        height = tf.cast(tf.shape(example["image"])[0], tf.float32)
        width = tf.cast(tf.shape(example["image"])[1], tf.float32)
        boxes = tf.reshape(tf.cast(objects["bbox"], tf.float32), [-1, 4]) * tf.stack([height, width, height, width])
        classes = tf.cast(objects["label"], tf.int32) + self.config.label_offset
        masks = self._masks(example) if self.config.include_masks else None
        if training and self.config.skip_crowd and "is_crowd" in objects:
            keep = tf.logical_not(tf.cast(objects["is_crowd"], tf.bool))
            boxes, classes = tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)
            if masks is not None:
                masks = tf.boolean_mask(masks, keep)
        return boxes, classes, masks

    def _augment(self, example):
        """`augment` before padding, with `image_info`."""
        config = self.config
        image = example["image"]
        boxes, classes, masks = self._ground_truth(example, training=True)
        flip = None
        if config.horizontal_flip:
            flip = tf.random.uniform([]) > 0.5
            width = tf.cast(tf.shape(image)[1], tf.float32)
            image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
            boxes = tf.cond(flip, lambda: tf.stack([boxes[:, 0], width - boxes[:, 3], boxes[:, 2],
                                                    width - boxes[:, 1]], axis=1), lambda: boxes)
        image, info = resize_and_pad(image, config.image_size, config.aug_scale_min, config.aug_scale_max)
        boxes = box_ops.transform_boxes(boxes, info, config.image_size)
        # Boxes cropped away (or degenerate after clipping) are dropped, as Model Garden's parser does.
        keep = tf.logical_and(boxes[:, 2] > boxes[:, 0], boxes[:, 3] > boxes[:, 1])
        boxes, classes = tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)
        if masks is not None:
            # Each box back in the original image (the visible part of the instance), unflipped: the crop of the
            # unflipped mask in the mirrored box, columns reversed, is the crop of the flipped mask.
            source = box_ops.original_pixels(boxes, info)
            if flip is not None:
                width = tf.cast(tf.shape(example["image"])[1], tf.float32)
                mirrored = tf.stack([source[:, 0], width - source[:, 3], source[:, 2], width - source[:, 1]], axis=1)
                source = tf.where(flip, mirrored, source)
            masks = mask_ops.crop_masks(tf.boolean_mask(masks, keep), source, config.mask_crop_size)
            if flip is not None:
                masks = tf.cond(flip, lambda: tf.reverse(masks, axis=[2]), lambda: masks)
        return image, info, boxes, classes, masks

    def augment(self, example):
        """Flip, scale-jitter, crop and pad one example: (image [H, W, 3] float 0-255, boxes [M, 4] in model-input
        pixels, classes [M]), padded to `max_instances` with zero boxes and class -1; with `include_masks`, also
        masks float32 [M, S, S] in [0, 1] (`mask_ops.crop_masks` of each augmented box, zeros for padding)."""
        config = self.config
        image, _, boxes, classes, masks = self._augment(example)
        padded = image, _pad(boxes, config.max_instances, 0.0), _pad(classes, config.max_instances, -1)
        return padded if masks is None else (*padded, _pad(masks, config.max_instances, 0.0))

    def instance_train_fn(self, example):
        """One training example for Mask R-CNN (`include_masks`) -> (normalised image, labels), Model Garden's
        `maskrcnn_input` training labels: `gt_boxes` [N, 4] in model-input pixels, padded with -1 (so padding
        never joins the RoIs); `gt_classes` [N] int32, padded with -1; `gt_masks` float32 [N, S, S], each mask
        cropped to its box, zeros for padding; `image_info` [4, 2]; and the RPN targets of the parser's anchors
        (the model's `anchor_boxes`, A of them), `rpn_score_targets` int32 [A] (1 / 0 sampled, -1 not) and
        `rpn_box_targets` float32 [A, 4] (`maskrcnn_targets.rpn_targets`). N = max_instances, S =
        mask_crop_size; crowd instances are left out (`skip_crowd`). Class 0 is Mask R-CNN's background: set
        `label_offset=1`.

        The RPN targets are built here, per example against its real boxes only, as MG's parser does: inside the
        train step every anchor would be matched against all N padded boxes, several times the work."""
        config = self.config
        if not config.include_masks:
            raise ValueError("instance_train_fn needs DetectionInputConfig(include_masks=True)")
        image, info, boxes, classes, masks = self._augment(example)
        rpn = maskrcnn_targets.rpn_targets(self.anchor_boxes, boxes[None], classes[None])
        labels = {"gt_boxes": _pad(boxes, config.max_instances, -1.0),
                  "gt_classes": _pad(classes, config.max_instances, -1),
                  "gt_masks": _pad(masks, config.max_instances, 0.0), "image_info": info,
                  "rpn_score_targets": rpn["score_targets"][0], "rpn_box_targets": rpn["box_targets"][0]}
        return normalize_image(image), labels

    def train_fn(self, example):
        """One training example -> (normalised image [H, W, 3], targets dict of `assign_targets`)."""
        image, boxes, classes, *_ = self.augment(example)
        targets = targets_lib.assign_targets(self.anchor_boxes, boxes, classes,
                                             positive_threshold=self.config.positive_threshold,
                                             negative_threshold=self.config.negative_threshold)
        return normalize_image(image), targets

    def eval_fn(self, example):
        """One evaluation example -> (normalised image, labels) with the image id, `image_info` and padded
        ground truth in original-image pixels (for COCO evaluation), crowd instances included (`gt_is_crowd`);
        with `include_masks`, `gt_masks` float32 [N, S, S] cropped to the original-pixel boxes
        (`mask_ops.paste_masks` puts them back)."""
        config = self.config
        image, info = resize_and_pad(example["image"], config.image_size)
        boxes, classes, masks = self._ground_truth(example, training=False)
        labels = {"image_id": tf.cast(example.get("image/id", -1), tf.int64), "image_info": info,
                  "gt_boxes": _pad(boxes, config.max_instances, 0.0),
                  "gt_classes": _pad(classes, config.max_instances, -1)}
        if "is_crowd" in example["objects"]:
            labels["gt_is_crowd"] = _pad(tf.cast(example["objects"]["is_crowd"], tf.int32), config.max_instances, 0)
        if masks is not None:
            crops = mask_ops.crop_masks(masks, boxes, config.mask_crop_size)
            labels["gt_masks"] = _pad(crops, config.max_instances, 0.0)
        return normalize_image(image), labels
