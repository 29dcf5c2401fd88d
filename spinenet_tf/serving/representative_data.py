"""Calibration images for full-integer (int8) TFLite quantization, drawn from a data source.

Preprocessing is the **evaluation** pipeline's (`detection_input.resize_and_pad` without jitter, then
`normalize_image`), not the training parser with flips and scale jitter that Model Garden's
`representative_dataset` uses (`official/vision/serving/export_tflite_lib.py`). The int8 ranges are fixed by what
the calibration images activate, and the deployed model sees whole images resized to fit and zero-padded (detection)
or centre crops (classification), never 2x-zoomed or random crops; eval preprocessing also makes calibration
deterministic, so the same data always gives the same .tflite. Images are taken in the source's order (no shuffle)
for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from spinenet_tf.data import classification_input, detection_input
from spinenet_tf.serving import tflite_input


def check_examples(dataset: tf.data.Dataset, task: str, flag: str = "--representative_data",
                   spec: str = "") -> None:
    """Raises a one-line ValueError unless `dataset` holds unbatched examples of `task` with RGB uint8 images.

    Args:
        dataset: Unbatched examples in the TFDS layout of our sources.
        task: "detection" (examples carry `objects`) or "classification" (examples carry `label`).
        flag, spec: Named in the error.
    """
    where = f"{flag}={spec}" if spec else flag
    element = dataset.element_spec
    if not isinstance(element, dict) or "image" not in element:
        raise ValueError(f"{where}: examples have no 'image' feature (got {_describe(element)})")
    image = element["image"]
    if image.dtype != tf.uint8 or image.shape.rank != 3 or image.shape[-1] not in (3, None):
        raise ValueError(f"{where}: 'image' must be uint8 [H, W, 3] RGB, got {image.dtype.name} {image.shape}")
    wanted = {"detection": "objects", "classification": "label"}[task]
    if wanted not in element:
        other = "classification" if task == "detection" else "detection"
        raise ValueError(f"{where}: has {other} examples (no '{wanted}'), but the model is a {task} model")


def _describe(element) -> str:
    if isinstance(element, dict):
        return "features " + ", ".join(sorted(element))
    return type(element).__name__


def calibration_images(dataset: tf.data.Dataset, image_size: tuple[int, int], num_images: int,
                       task: str = "detection", flag: str = "--representative_data", spec: str = "") -> np.ndarray:
    """The first `num_images` images as the evaluation pipeline of `task` prepares them, as TFLite inputs
    (`tflite_input.to_tflite_input`): float32 [n, H, W, 3].

    Detection: resize keeping the aspect ratio, pad (`DetectionInput.eval_fn`); classification: centre crop,
    resize (`ClassificationInput.eval_fn`).

    Raises:
        ValueError: `num_images` < 1, or the source has no examples (fewer than asked for is fine).
    """
    if num_images < 1:
        raise ValueError(f"--num_calibration_images={num_images}: must be >= 1")

    def prepare(example):
        if task == "classification":
            return classification_input.ClassificationInput(image_size).eval_fn(
                {"image": example["image"], "label": 0})[0]
        resized, _ = detection_input.resize_and_pad(example["image"], image_size)
        return detection_input.normalize_image(resized)

    images = [image.numpy() for image in dataset.take(num_images).map(prepare)]
    if not images:
        raise ValueError(f"{flag}={spec}: no examples to calibrate on")
    return tflite_input.tflite_input_from_normalized(np.stack(images))


def representative_dataset(images: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's `representative_dataset`: a callable yielding `[image [1, H, W, 3]]` for each image."""
    def generate():
        for image in images:
            yield [image[None]]
    return generate
