"""The TFLite graph of `spinenet_tf.serving.tflite_graph` on small untrained models, fast (issue 5).

The input normalisation is one subtraction with the per-channel scale folded into the stem conv, so the float
.tflite must compute the Keras model on the ImageNet-normalised image; with `clip_boxes` off the NMS op gets the raw
codes and anchors (Model Garden's graph) and no decoding ops. The trained-model checks (SavedModel agreement, int8
AP, MediaPipe) are the slow tflite_detector_test.py.
"""

from __future__ import annotations

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import spinenet_tf
from spinenet_tf.data import detection_input
from spinenet_tf.litert import interpreter as interpreter_lib
from spinenet_tf.serving import tflite_convert, tflite_graph, tflite_input

pytestmark = pytest.mark.litert

SIZE = 128


@pytest.fixture(scope="module")
def detector():
    keras.utils.set_random_seed(3)
    model = spinenet_tf.build_detector("retinanet-spinenet-mobile-49xs", 4, (SIZE, SIZE), num_filters=16)
    # Non-trivial batch-norm statistics, so that a wrong fold would show.
    for layer in model.backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.random.default_rng(0).normal(0, 0.1, layer.moving_mean.shape))
    return model


@pytest.fixture(scope="module")
def float_tflite(detector):
    """The default float conversion (clipped boxes, the NMS op on logits), shared: each conversion costs ~40 s."""
    return tflite_convert.convert(detector, "none")


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3)).astype(np.float32)


def _ops(content: bytes) -> collections.Counter:
    interpreter, _ = interpreter_lib.load_interpreter(content, num_threads=1, use_xnnpack=False)
    return collections.Counter(op["op_name"] for op in interpreter._get_ops_details())


def test_input_offset_and_scale_give_the_imagenet_normalisation(pixels):
    offset, scale = tflite_input.input_offset_and_scale()
    expected = detection_input.normalize_image(pixels).numpy()
    np.testing.assert_allclose((tflite_input.to_tflite_input(pixels) - offset) * scale, expected, atol=2e-6)


def test_folded_copy_equals_the_model_on_scaled_input_and_leaves_it_alone(detector, pixels):
    before = [w.copy() for w in detector.get_weights()]
    offset, scale = tflite_input.input_offset_and_scale()
    folded = tflite_graph.fold_input_scale(detector, scale)
    x = tflite_input.to_tflite_input(pixels)[None] - offset
    ours, expected = folded(x, training=False), detector(x * scale, training=False)
    for key in ("box_outputs", "cls_outputs"):
        np.testing.assert_allclose(ours[key], expected[key], atol=1e-4, rtol=1e-4)
    assert all(np.array_equal(a, b) for a, b in zip(before, detector.get_weights()))


def test_float_raw_outputs_match_keras_on_the_normalised_image(detector, pixels):
    content = tflite_convert.convert(detector, "none", raw_outputs=True)
    ops = _ops(content)
    assert ops["SUB"] == 1 and "DIV" not in ops  # the normalisation: one subtraction, the scale in the stem conv
    # ... on rows of many pixels, not broadcast over an innermost axis of 3 (5x slower with XNNPACK).
    interpreter, _ = interpreter_lib.load_interpreter(content, num_threads=1, use_xnnpack=False)
    sub = next(op for op in interpreter._get_ops_details() if op["op_name"] == "SUB")
    tensors = {details["index"]: details for details in interpreter.get_tensor_details()}
    shapes = [tuple(tensors[i]["shape"]) for i in sub["inputs"]]
    assert sorted(shapes, key=len) == [(96,), (SIZE * SIZE // 32, 96)], shapes
    out = interpreter_lib.TFLiteModel(content)(tflite_input.to_tflite_input(pixels))
    expected = detector(detection_input.normalize_image(pixels)[None], training=False)
    np.testing.assert_allclose(out["raw_boxes"], expected["box_outputs"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(out["raw_scores"], tf.sigmoid(expected["cls_outputs"]), atol=1e-5)


def test_clip_boxes_off_feeds_the_op_raw_codes_and_anchors(detector, float_tflite, pixels):
    clipped = float_tflite
    raw = tflite_convert.convert(detector, "none", postprocess=tflite_graph.PostProcessConfig.from_model(detector,
                                                                                           clip_boxes=False))
    clipped_ops, raw_ops = _ops(clipped), _ops(raw)
    assert clipped_ops["TFLite_Detection_PostProcess"] == raw_ops["TFLite_Detection_PostProcess"] == 1
    assert clipped_ops["EXP"] == 1 and "EXP" not in raw_ops  # the decoding is the op's own
    # The decoding's halves are unstacked and stacked: LiteRT's own STRIDED_SLICE and CONCATENATION kernels (not
    # XNNPACK's) made the clipping 3-4x slower.
    for op in ("STRIDED_SLICE", "CONCATENATION"):
        assert clipped_ops[op] == raw_ops[op], op
    assert sum(raw_ops.values()) < sum(clipped_ops.values())
    image = tflite_input.to_tflite_input(pixels)
    a, b = interpreter_lib.TFLiteModel(clipped)(image), interpreter_lib.TFLiteModel(raw)(image)
    # Clipped (the op re-decodes center-size boxes, so within float rounding of [0, 1]).
    assert a["detection_boxes"].min() >= -1e-6 and a["detection_boxes"].max() <= 1.0 + 1e-6
    # The best detection is found by both (the same scores; only NMS among border-crossing boxes may differ).
    assert a["detection_scores"][0, 0] == pytest.approx(b["detection_scores"][0, 0], abs=1e-6)
    for out in (a, b):
        count = int(out["num_detections"][0])
        assert np.all(np.isfinite(out["detection_scores"])) and np.all(out["detection_scores"][0, count:] == 0)


def test_nms_on_logits_keeps_what_nms_on_sigmoid_scores_keeps(detector, pixels):
    """The op runs on logits with the threshold at logit(t) and the kept scores go through the sigmoid: the same
    detections as the op on sigmoid scores (MG's graph), with fewer and with more boxes than the 100 rows."""
    image = tflite_input.to_tflite_input(pixels)
    config = tflite_graph.PostProcessConfig.from_model(detector)
    rng = np.random.default_rng(4)
    predictor = detector.get_layer("retinanet_head").class_predictor
    original = [w.numpy() for w in predictor.weights]
    try:
        # The untrained head's logits hardly vary over anchors (std 1e-4: its input features are near constant),
        # so the float32 sigmoid makes ties that the op breaks in its own order; predictor weights of std 120
        # spread the logits over a few units (std ~2).
        for w in predictor.weights[:-1]:
            w.assign(rng.normal(0, 120.0, w.shape).astype(np.float32))
        for center in (-9.0, -4.0):   # fewer / more than 100 anchors above 0.05
            predictor.bias.assign(rng.normal(center, 1.0, predictor.bias.shape).astype(np.float32))
            outputs = interpreter_lib.TFLiteModel(_convert_with_nms_on_sigmoid_scores(detector, config))(image)
            ours = {key: outputs[key] for key in interpreter_lib.DETECTION_OUTPUTS}
            expected = {key: outputs[_ON_SIGMOID + key] for key in interpreter_lib.DETECTION_OUTPUTS}
            count = int(expected["num_detections"][0])
            assert int(ours["num_detections"][0]) == count and 0 < count, center
            assert (count < config.max_detections) == (center < -5), (center, count)
            for key in ("detection_boxes", "detection_classes"):
                np.testing.assert_array_equal(ours[key][0, :count], expected[key][0, :count])
            np.testing.assert_allclose(ours["detection_scores"][0, :count], expected["detection_scores"][0, :count],
                                       rtol=1e-6)
    finally:
        for w, value in zip(predictor.weights, original):
            w.assign(value)


_ON_SIGMOID = "on_sigmoid_"


def _convert_with_nms_on_sigmoid_scores(model, config) -> bytes:
    """One float .tflite with both graphs, on the same image: our graph (`TFLiteDetectionModule.serve`, as
    `tflite_convert.convert(model, "none")` builds it, the op on logits) and, its outputs named `_ON_SIGMOID` +
    key, the op fed sigmoid scores at threshold t, as Model Garden's graph does. One conversion instead of two
    (~40 s each)."""
    module = tflite_graph.TFLiteDetectionModule(model)
    assert module.postprocess == config
    module._nms_on_sigmoid = tf.function(tflite_graph._empty_postprocess, experimental_implements=tflite_graph
                                         .implements_signature(config, model.num_classes))

    def serve(image):
        outputs = module._model(tflite_graph._to_folded_input(module, image), training=False)
        codes = tf.cast(outputs["box_outputs"], tf.float32)
        boxes, classes, scores, count = module._nms_on_sigmoid(codes - codes, tf.sigmoid(outputs["cls_outputs"]),
                                                               tflite_graph.clipped_boxes(codes, module._anchors))
        expected = {"detection_boxes": boxes, "detection_classes": classes, "detection_scores": scores,
                    "num_detections": count}
        return {**module.serve(image), **{_ON_SIGMOID + key: value for key, value in expected.items()}}

    function = tf.function(serve, input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="image")])
    with tflite_convert.saved_model_converter(module, function.get_concrete_function()) as converter:
        return converter.convert()


def test_metadata_names_each_output_by_its_role(float_tflite):
    """The scores are the sigmoid of the op's output, not the op's output: the metadata must still find them."""
    from tensorflow.lite.python import schema_py_generated as schema

    from spinenet_tf.serving import metadata

    content = metadata.add_detector_metadata(float_tflite, ["a", "b", "c", "d"])
    subgraph = schema.Model.GetRootAs(content, 0).Subgraphs(0)
    model_outputs = [int(t) for t in subgraph.OutputsAsNumpy()]
    names = [t.name.decode() for t in metadata.read_metadata(content).subgraphMetadata[0].outputTensorMetadata]
    runner = interpreter_lib.load_interpreter(content, 1)[0].get_signature_runner("serving_default")
    by_index = {details["index"]: key for key, details in runner.get_output_details().items()}
    roles = {"detection_boxes": "location", "detection_classes": "category", "detection_scores": "score",
             "num_detections": "number of detections"}
    assert [roles[by_index[t]] for t in model_outputs] == names
