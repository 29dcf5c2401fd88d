"""TFLite conversion of a `RetinaNet` (with on-device NMS) or a `Classifier`, float or quantized.

Detectors end in TFLite's `TFLite_Detection_PostProcess` custom op, emitted as Model Garden does
(`official/vision/modeling/layers/detection_generator.py::_generate_detections_tflite`, tf-models-official 2.20.0):
the graph passes box codes `[1, N, 4]`, sigmoid scores `[1, N, C]` and anchors `[N, 4]` (ycenter, xcenter, h, w) to an
empty `tf.function` whose `experimental_implements` string names the op and its attributes, and the MLIR converter
legalises that function to the custom op (REFERENCE.md §4.2). Anchors are divided by the input size, so boxes come
out as RATIO in [0, 1] of the model input, which is what MediaPipe / Task Library detectors expect (§4.4).

The TFLite input is float32 `[1, H, W, 3]` RGB scaled to [-1, 1), `(pixel - 128) / 128` (`to_tflite_input`), of
the resized (and, as in training, padded) image; the graph's first ops turn it into the ImageNet normalisation the
network was trained with (`detection_input.normalize_image`). Why not ImageNet statistics at the input:
MediaPipe's ObjectDetector refuses per-channel NormalizationOptions ("Per-channel image normalization is not
available", mediapipe 1.2.2), and one mean / std for all channels is what it applies. Why 128 and not 127.5: an
int8 input step of 1 / 128 maps pixel p exactly to the integer p - 128, whereas with 127.5 every pixel lands
half-way between two int8 values, so float rounding noise of 1e-7 in the caller's normalisation (MediaPipe's
differs from numpy's) flips pixels by one step and int8 detections differ between runtimes (measured: scores
4 steps of 1/256 apart at the median between MediaPipe and LiteRT). Outputs of the NMS version, all float32:

    detection_boxes    [1, K, 4]  ymin, xmin, ymax, xmax as a fraction of the model input (not clipped)
    detection_classes  [1, K]     class index (the head's channel; minus 1 when the model skips channel 0)
    detection_scores   [1, K]
    num_detections     [1]

`raw_outputs=True` instead returns `raw_boxes` (box codes) `[1, N, 4]` and `raw_scores` (sigmoid) `[1, N, C]`.

Quantization (MG `export_tflite_lib.convert_tflite_model` names in brackets, REFERENCE.md §4.1):
    none     float32
    fp16     float16 weights, float compute on CPU  [fp16]
    dynamic  int8 weights, float activations        [default]
    int8     int8 weights and activations, integer-only builtin ops, calibrated on a representative dataset
             [int8_full_fp32_io]; detectors keep float32 I/O (the NMS op's outputs must stay float, §4.3),
             classifiers may take int8 / uint8 I/O [int8_full_int8_io / int8_full]. Activation ranges are
             percentile-clipped histograms of the float graph's values (`calibration.py`), not the converter's
             absolute min/max.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

from spinenet_tf.data import detection_input
from spinenet_tf.detection import box_coder
from spinenet_tf.serving import calibration, output_path, signatures

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
INPUT_MEAN = 128.0   # the TFLite input is (pixel - INPUT_MEAN) / INPUT_STD, one value for every channel
INPUT_STD = 128.0
# The TFLite values of pixels 0 and 255: the int8 input range, fixed rather than calibrated, so that its step is
# 1 / 128 with zero point 0 and every pixel value p is quantized exactly to p - 128.
INPUT_RANGE = ((0.0 - INPUT_MEAN) / INPUT_STD, (255.0 - INPUT_MEAN) / INPUT_STD)
IO_TYPES = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}
POSTPROCESS_OP = "TFLite_Detection_PostProcess"
# Name scope of the box decoding and clipping before the NMS op; kept in float32 in int8 models.
CLIP_SCOPE = "clip_boxes_to_input"


@dataclasses.dataclass(frozen=True)
class PostProcessConfig:
    """Attributes of the `TFLite_Detection_PostProcess` op (tensorflow/lite/kernels/detection_postprocess.cc).

    Attributes:
        max_detections: Rows of the outputs (K).
        max_classes_per_detection: Classes reported per box by the fast NMS; 1 makes each row one box, so
            `num_detections` counts rows (MediaPipe reads it so).
        detections_per_class: Boxes kept per class by the regular NMS.
        use_regular_nms: Per-class NMS (as `RetinaNet.detect` by default) instead of the fast NMS, which is
            class-agnostic NMS over each anchor's best class (= `RetinaNet(class_agnostic_nms=True)`; MG's default).
            False by default: with more than one interpreter thread the regular NMS kernel of TF 2.20 / LiteRT
            2.3.0 drops every detection of one class (class 2 of 6 with 2 threads, measured on every image tried;
            `tests/litert/tflite_detector_test.py`); with one thread it matches the SavedModel exactly.
        nms_score_threshold, nms_iou_threshold: As the model's `score_threshold` / `iou_threshold`.
    """

    max_detections: int = 100
    max_classes_per_detection: int = 1
    detections_per_class: int = 100
    use_regular_nms: bool = False
    nms_score_threshold: float = 0.05
    nms_iou_threshold: float = 0.5

    @classmethod
    def from_model(cls, model, **overrides) -> PostProcessConfig:
        """The model's own decoding settings (`RetinaNet.decode_config`), with `overrides`."""
        decode = model.decode_config
        values = dict(max_detections=decode["max_detections"], detections_per_class=decode["max_detections"],
                      nms_score_threshold=decode["score_threshold"], nms_iou_threshold=decode["iou_threshold"])
        return cls(**{**values, **overrides})


def to_tflite_input(pixels) -> np.ndarray:
    """RGB pixels (0..255, resized / padded to the model input) -> the TFLite input, float32."""
    return ((np.asarray(pixels, np.float32) - INPUT_MEAN) / INPUT_STD).astype(np.float32)


def tflite_input_from_normalized(images) -> np.ndarray:
    """Images normalised as in training (`detection_input.normalize_image`) -> the TFLite input."""
    mean, std = np.array(detection_input.MEAN_RGB, np.float32), np.array(detection_input.STDDEV_RGB, np.float32)
    return to_tflite_input(np.asarray(images, np.float32) * std + mean)


def _to_normalized(image: tf.Tensor) -> tf.Tensor:
    """In the graph: the TFLite input -> the network's ImageNet-normalised input."""
    return detection_input.normalize_image(image * INPUT_STD + INPUT_MEAN)


def implements_signature(config: PostProcessConfig, num_classes: int) -> str:
    """The `experimental_implements` text the converter turns into the custom op (MG's attribute list; box coder
    scales 1.0 as RetinaNet's codes are unweighted)."""
    attrs = [("max_detections", "i", config.max_detections),
             ("max_classes_per_detection", "i", config.max_classes_per_detection),
             ("detections_per_class", "i", config.detections_per_class),
             ("use_regular_nms", "b", str(config.use_regular_nms).lower()),
             ("nms_score_threshold", "f", f"{config.nms_score_threshold:f}"),
             ("nms_iou_threshold", "f", f"{config.nms_iou_threshold:f}"),
             ("y_scale", "f", "1.000000"), ("x_scale", "f", "1.000000"),
             ("h_scale", "f", "1.000000"), ("w_scale", "f", "1.000000"),
             ("num_classes", "i", num_classes)]
    return " ".join([f'name: "{POSTPROCESS_OP}"'] +
                    [f'attr {{ key: "{key}" value {{ {kind}: {value} }} }}' for key, kind, value in attrs])


class TFLiteDetectionModule(tf.Module):
    """The batch-1 graph converted for a `RetinaNet`: image in [-1, 1] -> NMS op outputs (or raw outputs)."""

    def __init__(self, model, postprocess: PostProcessConfig | None = None, raw_outputs: bool = False):
        super().__init__()
        signatures.hold_model(self, model)
        self.image_size = signatures.image_size_of(model)
        self.postprocess = postprocess or PostProcessConfig.from_model(model)
        self.raw_outputs = raw_outputs
        self.skip_class_zero = bool(model.decode_config["skip_class_zero"])
        height, width = self.image_size
        # RATIO anchors: MG's normalize_anchor_coordinates=True.
        self._anchors = (box_coder.boxes_to_center_size(tf.constant(model.anchor_boxes, tf.float32))
                         / tf.constant([height, width, height, width], tf.float32))
        # With C + 1 score columns the kernel treats column 0 as background and reports classes 1..C as 0..C-1.
        num_classes = model.num_classes - 1 if self.skip_class_zero else model.num_classes
        self._nms = tf.function(_empty_postprocess,
                                experimental_implements=implements_signature(self.postprocess, num_classes))

    def serve(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = self._model(_to_normalized(image), training=False)
        box_codes = tf.cast(outputs["box_outputs"], tf.float32)
        scores = tf.sigmoid(tf.cast(outputs["cls_outputs"], tf.float32))
        if self.raw_outputs:
            return {"raw_boxes": box_codes, "raw_scores": scores}
        with tf.name_scope(CLIP_SCOPE):
            clipped = clipped_boxes(box_codes, self._anchors)
            # Zero codes relative to the clipped boxes: the op decodes them to exactly those boxes. (Computed, not
            # a constant, which would add N x 16 bytes to the file.)
            zero_codes = box_codes - box_codes
        boxes, classes, scores, count = self._nms(zero_codes, scores, clipped)
        return {"detection_boxes": boxes, "detection_classes": classes, "detection_scores": scores,
                "num_detections": count}

    def signature(self):
        height, width = self.image_size
        return tf.function(self.serve, input_signature=[
            tf.TensorSpec([1, height, width, 3], tf.float32, name="image")]).get_concrete_function()


def clipped_boxes(box_codes: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """Box codes `[1, N, 4]` and RATIO anchors `[N, 4]` (ycenter, xcenter, h, w) -> the decoded boxes clipped to
    the input, `[N, 4]` in the same center-size form: what `RetinaNet.decode` suppresses among.

    The op alone decodes without clipping (detection_postprocess.cc), and clipping changes the IoU of boxes that
    cross the border: measured on the test model, a box scoring 0.21 that reaches 6 px above the image overlaps a
    better box by IoU 0.46 unclipped (kept by the op) and 0.52 clipped (suppressed by the SavedModel). So the graph
    decodes and clips here and hands the op these boxes as its anchors (the kernel reads the anchors tensor at
    every invoke) with zero codes. Decoding as `box_coder.decode_boxes`, log-scale codes capped at
    `BBOX_XFORM_CLIP`.
    """
    centers = box_codes[0, :, :2] * anchors[:, 2:] + anchors[:, :2]
    sizes = tf.exp(tf.minimum(box_codes[0, :, 2:], box_coder.BBOX_XFORM_CLIP)) * anchors[:, 2:]
    low = tf.clip_by_value(centers - 0.5 * sizes, 0.0, 1.0)
    high = tf.clip_by_value(centers + 0.5 * sizes, 0.0, 1.0)
    return tf.concat([0.5 * (low + high), high - low], axis=-1)


def _empty_postprocess(box_codes, scores, anchors):
    """Stands in for the custom op: the converter replaces the whole function; TF never runs it usefully."""
    del box_codes, scores, anchors
    zero = tf.constant(0.0, tf.float32)
    return zero, zero, zero, zero


class TFLiteClassificationModule(tf.Module):
    """The batch-1 graph converted for a `Classifier`: image in [-1, 1] -> logits."""

    def __init__(self, model):
        super().__init__()
        signatures.hold_model(self, model)
        self.image_size = signatures.image_size_of(model)

    def serve(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"logits": tf.cast(self._model(_to_normalized(image), training=False), tf.float32)}

    def signature(self):
        height, width = self.image_size
        return tf.function(self.serve, input_signature=[
            tf.TensorSpec([1, height, width, 3], tf.float32, name="image")]).get_concrete_function()


def _is_detector(model) -> bool:
    from spinenet_tf.detection.retinanet import RetinaNet

    if isinstance(model, RetinaNet):
        return True
    from spinenet_tf.classification import Classifier

    if isinstance(model, Classifier):
        return False
    raise TypeError(f"cannot export a {type(model).__name__}: expected a RetinaNet or a Classifier")


def convert(model, quantization: str = "none",
            representative_dataset: Callable[[], Iterable[list[np.ndarray]]] | None = None,
            io_type: str = "float32", postprocess: PostProcessConfig | None = None,
            raw_outputs: bool = False) -> bytes:
    """Converts a `RetinaNet` or `Classifier` to a TFLite flatbuffer (no metadata; see `metadata.py`).

    Args:
        model: The Keras model.
        quantization: One of `QUANTIZATIONS` (module docstring).
        representative_dataset: For "int8": a callable returning an iterable of `[image]`, image float32
            `[1, H, W, 3]` TFLite inputs (`representative_data.representative_dataset`).
        io_type: "float32", or for an int8 classifier "int8" / "uint8" input and output.
        postprocess: NMS op settings for detectors (default: the model's decoding settings).
        raw_outputs: Detectors only: no NMS op; outputs `raw_boxes` and `raw_scores`.

    Returns:
        The .tflite bytes.

    Raises:
        ValueError: Unknown quantization or I/O type, int8 without a representative dataset, integer I/O on a
            detector or without int8 quantization.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"--quantization={quantization}: must be one of {', '.join(QUANTIZATIONS)}")
    if io_type not in IO_TYPES:
        raise ValueError(f"--io_type={io_type}: must be one of {', '.join(IO_TYPES)}")
    detector = _is_detector(model)
    if quantization == "int8" and representative_dataset is None:
        raise ValueError("--quantization=int8 needs calibration images: set --representative_data")
    if io_type != "float32" and quantization != "int8":
        raise ValueError(f"--io_type={io_type}: integer input/output needs --quantization=int8")
    if io_type != "float32" and detector:
        raise ValueError(f"--io_type={io_type}: detectors keep float32 input/output (the NMS op's outputs must be "
                         "float; MediaPipe requires float outputs)")
    module = (TFLiteDetectionModule(model, postprocess, raw_outputs) if detector
              else TFLiteClassificationModule(model))
    with tempfile.TemporaryDirectory(prefix="spinenet_tf_tflite_") as saved_model_dir:
        # Converting from a SavedModel, as MG does: from_concrete_functions inlines the empty NMS function
        # before the converter can see its `experimental_implements` attribute.
        tf.saved_model.save(module, saved_model_dir, signatures={"serving_default": module.signature()})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_default"])
        if quantization != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            # Activation ranges measured by `calibration` (percentile-clipped), not the converter's min/max.
            return calibration.quantize(converter, representative_dataset, IO_TYPES[io_type], IO_TYPES[io_type],
                                        input_range=INPUT_RANGE, float_scopes=(CLIP_SCOPE,))
        return converter.convert()


def write_tflite(content: bytes, path: str, flag: str = "--output") -> str:
    """Writes .tflite bytes atomically (nothing is left at `path` if writing fails); returns the absolute path."""
    with output_path.atomic_output(path, flag=flag) as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
    return os.path.abspath(path)
