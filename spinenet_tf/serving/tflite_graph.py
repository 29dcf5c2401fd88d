"""The TensorFlow graphs converted to TFLite: `TFLiteDetectionModule` for a `RetinaNet` (ending in the on-device NMS
op) and `TFLiteClassificationModule` for a `Classifier`, both batch 1 on the TFLite input of `tflite_input`.

Detectors end in TFLite's `TFLite_Detection_PostProcess` custom op, emitted as Model Garden does
(`official/vision/modeling/layers/detection_generator.py::_generate_detections_tflite`, tf-models-official 2.20.0):
the graph passes box codes `[1, N, 4]`, class scores `[1, N, C]` and anchors `[N, 4]` (ycenter, xcenter, h, w) to
an empty `tf.function` whose `experimental_implements` string names the op and its attributes, and the MLIR
converter legalises that function to the custom op (`tflite_convert`). Anchors are divided by the input size, so
boxes come out as RATIO in [0, 1] of the model input, which is what MediaPipe / Task Library detectors expect.
Unlike MG, the op gets the logits (threshold logit(t)) and the sigmoid runs on the K kept scores only: the same
detections without a sigmoid over all N x C scores (the logits order boxes at least as finely as their float32
sigmoids, which can tie where the logits differ; `tests/litert/tflite_graph_test.py`).

The input normalisation is one subtraction in the graph, the scale being folded into the stem conv
(`fold_input_scale`; timings in bench/README.md). Outputs of the NMS version, all float32:

    detection_boxes    [1, K, 4]  ymin, xmin, ymax, xmax as a fraction of the model input (clipped to [0, 1]
                                  unless `PostProcessConfig.clip_boxes` is off)
    detection_classes  [1, K]     class index (the head's channel; minus 1 when the model skips channel 0)
    detection_scores   [1, K]
    num_detections     [1]

`raw_outputs=True` instead returns `raw_boxes` (box codes) `[1, N, 4]` and `raw_scores` (sigmoid) `[1, N, C]`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from spinenet_tf.detection import box_coder
from spinenet_tf.serving import signatures, tflite_input

POSTPROCESS_OP = "TFLite_Detection_PostProcess"
# Name scopes of the box decoding and clipping before the NMS op and of the sigmoid of the scores it keeps; both
# stay float32 in int8 models.
CLIP_SCOPE = "clip_boxes_to_input"
SCORE_SCOPE = "scores_of_kept_detections"
# Name scope of the input offset subtraction; float32 in int8 models as well, since the quantizer's broadcasting
# int8 SUB with a per-channel constant is several times slower than the float one (bench/README.md).
INPUT_SCOPE = "input_offset"


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
        clip_boxes: Decode and clip the boxes to the input before the op, as `RetinaNet.decode` does, so that NMS
            sees the same boxes as in the SavedModel (`clipped_boxes`). Off: the op gets the raw box codes and
            anchors, as in Model Garden's export, and its boxes are not clipped; saves the decoding ops (a small
            part of an invoke, timed by `bench/tflite_postprocess.py`; bench/README.md) and NMS may keep a
            different box among overlapping boxes that cross the border.
    """

    max_detections: int = 100
    max_classes_per_detection: int = 1
    detections_per_class: int = 100
    use_regular_nms: bool = False
    nms_score_threshold: float = 0.05
    nms_iou_threshold: float = 0.5
    clip_boxes: bool = True

    @classmethod
    def from_model(cls, model, **overrides) -> PostProcessConfig:
        """The model's own decoding settings (`RetinaNet.decode_config`), with `overrides`."""
        decode = model.decode_config
        values = dict(max_detections=decode["max_detections"], detections_per_class=decode["max_detections"],
                      nms_score_threshold=decode["score_threshold"], nms_iou_threshold=decode["iou_threshold"])
        return cls(**{**values, **overrides})



def fold_input_scale(model, scale: np.ndarray):
    """A copy of `model` (a RetinaNet or Classifier) whose stem conv multiplies input channel c by `scale[c]`.

    The stem conv (`backbone.get_layer("stem_conv")`) is the only consumer of the backbone's input, and a per-input-
    channel factor commutes with its zero padding, so `copy(x) == model(x * scale)` up to float rounding. The
    original model is not touched.
    """
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    conv = copy.backbone.get_layer("stem_conv")
    conv.kernel.assign(conv.kernel * tf.constant(scale, conv.kernel.dtype)[None, None, :, None])
    return copy


def _hold_folded(module: tf.Module, model) -> None:
    """Holds a copy of `model` with the input scale folded; the graph subtracts `module._input_offset`."""
    offset, scale = tflite_input.input_offset_and_scale()
    signatures.hold_model(module, fold_input_scale(model, scale))
    module._input_offset = tf.constant(offset)


def _to_folded_input(module: tf.Module, image: tf.Tensor) -> tf.Tensor:
    """In the graph: the TFLite input -> the folded model's input (the normalised image over `scale`).

    The subtraction runs on a view of the image with `3 k` values per row (k pixels, k = 32 where the pixel count
    allows) against the offset tiled k times: a broadcast over an innermost axis of 3 does not vectorise in
    XNNPACK, this view does, and the reshapes are free (timings in bench/README.md). The tiled constant is 384
    bytes.
    """
    height, width, channels = image.shape[1:]
    pixels = math.gcd(height * width, 32)
    with tf.name_scope(INPUT_SCOPE):
        rows = tf.reshape(image, [-1, pixels * channels])
        return tf.reshape(rows - tf.tile(module._input_offset, [pixels]), [-1, height, width, channels])


def logit(probability: float) -> float:
    """The score threshold of the op, which runs on logits: log(p / (1 - p)); -1e30 (keep all) for p <= 0."""
    if probability <= 0.0:
        return -1e30
    if probability >= 1.0:
        return 1e30
    return math.log(probability / (1.0 - probability))


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
        _hold_folded(self, model)
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
        on_logits = dataclasses.replace(self.postprocess,
                                        nms_score_threshold=logit(self.postprocess.nms_score_threshold))
        self._nms = tf.function(_empty_postprocess,
                                experimental_implements=implements_signature(on_logits, num_classes))

    def serve(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = self._model(_to_folded_input(self, image), training=False)
        box_codes = tf.cast(outputs["box_outputs"], tf.float32)
        logits = tf.cast(outputs["cls_outputs"], tf.float32)
        if self.raw_outputs:
            return {"raw_boxes": box_codes, "raw_scores": tf.sigmoid(logits)}
        return self.detections(box_codes, logits)

    def detections(self, box_codes: tf.Tensor, logits: tf.Tensor) -> dict[str, tf.Tensor]:
        """Box codes `[1, N, 4]` and class logits `[1, N, C]` -> the four outputs of the NMS op (the graph's tail
        after the network; `bench/tflite_postprocess.py` times it alone)."""
        if self.postprocess.clip_boxes:
            with tf.name_scope(CLIP_SCOPE):
                anchors = clipped_boxes(box_codes, self._anchors)
                # Zero codes relative to the clipped boxes: the op decodes them to exactly those boxes. (Computed,
                # not a constant, which would add N x 16 bytes to the file.)
                box_codes = box_codes - box_codes
        else:
            anchors = self._anchors
        # NMS on the logits: the sigmoid is increasing, so with the threshold at logit(t) the op keeps the same
        # boxes in the same order, and only the K kept scores go through the sigmoid (not N x C of them; the
        # saving is in bench/README.md). Rows past num_detections stay 0, as the op's.
        boxes, classes, kept_logits, count = self._nms(box_codes, logits, anchors)
        with tf.name_scope(SCORE_SCOPE):
            rows = tf.range(self.postprocess.max_detections, dtype=tf.float32)[None]
            # sigmoid(-1e4) is exactly 0 with the builtin kernel and XNNPACK (which returns NaN for -1e30).
            scores = tf.sigmoid(tf.where(rows < tf.reshape(count, [-1, 1]), kept_logits, -1e4))
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
    cross the border: on the test model, for example, a box scoring 0.21 that reaches 6 px above the image overlaps a
    better box by IoU 0.46 unclipped (kept by the op) and 0.52 clipped (suppressed by the SavedModel). So the graph
    decodes and clips here and hands the op these boxes as its anchors (the kernel reads the anchors tensor at
    every invoke) with zero codes. Decoding as `box_coder.decode_boxes`, log-scale codes capped at
    `BBOX_XFORM_CLIP`.

    The (center, size) halves are taken apart by viewing `[N, 4]` as `[N, 2, 2]` and unstacking the middle axis,
    and put back by stacking: LiteRT runs `STRIDED_SLICE` of the last axis and `CONCATENATION` of the halves in
    its own kernels (XNNPACK does not take them), which made this tail about three times slower, while XNNPACK
    runs the elementwise ops (timings in bench/README.md, `tflite_postprocess.py`). The anchors' halves fold into
    two `[N, 2]` constants, the same bytes as the `[N, 4]` one.
    """
    code_centers, code_sizes = tf.unstack(tf.reshape(box_codes, [-1, 2, 2]), axis=1)
    anchor_centers, anchor_sizes = tf.unstack(tf.reshape(anchors, [-1, 2, 2]), axis=1)
    centers = code_centers * anchor_sizes + anchor_centers
    sizes = tf.exp(tf.minimum(code_sizes, box_coder.BBOX_XFORM_CLIP)) * anchor_sizes
    halves = 0.5 * sizes   # from the decoded sizes, not a third folded constant `0.5 * anchor_sizes`
    low = tf.clip_by_value(centers - halves, 0.0, 1.0)
    high = tf.clip_by_value(centers + halves, 0.0, 1.0)
    return tf.reshape(tf.stack([0.5 * (low + high), high - low], axis=1), [-1, 4])


def _empty_postprocess(box_codes, scores, anchors):
    """Stands in for the custom op: the converter replaces the whole function; TF never runs it usefully."""
    del box_codes, scores, anchors
    zero = tf.constant(0.0, tf.float32)
    return zero, zero, zero, zero


class TFLiteClassificationModule(tf.Module):
    """The batch-1 graph converted for a `Classifier`: image in [-1, 1] -> logits."""

    def __init__(self, model):
        super().__init__()
        _hold_folded(self, model)
        self.image_size = signatures.image_size_of(model)

    def serve(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"logits": tf.cast(self._model(_to_folded_input(self, image), training=False), tf.float32)}

    def signature(self):
        height, width = self.image_size
        return tf.function(self.serve, input_signature=[
            tf.TensorSpec([1, height, width, 3], tf.float32, name="image")]).get_concrete_function()


def is_detector(model) -> bool:
    """True for a `RetinaNet`, False for a `Classifier`; TypeError for anything else."""
    from spinenet_tf.detection.retinanet import RetinaNet

    if isinstance(model, RetinaNet):
        return True
    from spinenet_tf.classification import Classifier

    if isinstance(model, Classifier):
        return False
    raise TypeError(f"cannot export a {type(model).__name__}: expected a RetinaNet or a Classifier")
