"""The input of our .tflite files: float32 `[1, H, W, 3]` RGB scaled to [-1, 1), `(pixel - 128) / 128`, of the
resized (and, as in training, padded) image; and conversions to it from pixels or from training-normalised images.

The graph (`tflite_graph`) turns this input into the ImageNet normalisation the network was trained with
(`detection_input.normalize_image`): `(x - offset_c) * scale_c` is exact, so the graph subtracts the per-channel
offset and the scale is folded into the stem conv's kernel (`tflite_graph.fold_input_scale`).

Why not ImageNet statistics at the input: MediaPipe's ObjectDetector refuses per-channel NormalizationOptions
("Per-channel image normalization is not available", mediapipe 1.2.2), and one mean / std for all channels is what
it applies. Why 128 and not 127.5: the input (p - 128) / 128 is exact in float in every runtime, and an int8 input
step of 1 / 128 (int8-input classifiers) maps pixel p exactly to the integer p - 128, whereas with 127.5 every pixel
lands half-way between two int8 values, so float rounding noise in the caller's normalisation (MediaPipe's differs
from numpy's) flips pixels by one step and int8 detections differ between runtimes (tflite/README.md).
"""

from __future__ import annotations

import numpy as np

from spinenet_tf.data import detection_input

INPUT_MEAN = 128.0   # the TFLite input is (pixel - INPUT_MEAN) / INPUT_STD, one value for every channel
INPUT_STD = 128.0
# The TFLite values of pixels 0 and 255: the int8 input range, fixed rather than calibrated, so that its step is
# 1 / 128 with zero point 0 and every pixel value p is quantized exactly to p - 128.
INPUT_RANGE = ((0.0 - INPUT_MEAN) / INPUT_STD, (255.0 - INPUT_MEAN) / INPUT_STD)


def to_tflite_input(pixels) -> np.ndarray:
    """RGB pixels (0..255, resized / padded to the model input) -> the TFLite input, float32."""
    return ((np.asarray(pixels, np.float32) - INPUT_MEAN) / INPUT_STD).astype(np.float32)


def tflite_input_from_normalized(images) -> np.ndarray:
    """Images normalised as in training (`detection_input.normalize_image`) -> the TFLite input."""
    mean, std = np.array(detection_input.MEAN_RGB, np.float32), np.array(detection_input.STDDEV_RGB, np.float32)
    return to_tflite_input(np.asarray(images, np.float32) * std + mean)


def input_offset_and_scale() -> tuple[np.ndarray, np.ndarray]:
    """Per-channel `(offset, scale)` with `normalize_image(pixels) == (to_tflite_input(pixels) - offset) * scale`."""
    mean, std = np.array(detection_input.MEAN_RGB, np.float64), np.array(detection_input.STDDEV_RGB, np.float64)
    return ((mean - INPUT_MEAN) / INPUT_STD).astype(np.float32), (INPUT_STD / std).astype(np.float32)
