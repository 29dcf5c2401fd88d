"""TFLite detectors with the on-device NMS op, run with LiteRT (and MediaPipe), on a briefly trained model.

Slow: the shared fixture trains RetinaNet SpineNet-Mobile-49XS at 128x128 for ~16 CPU-minutes once per cache
(`export_testing`), and each conversion takes ~30 s (int8: ~2 minutes, with the range measurement of
`serving/calibration.py`).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import export_testing
from spinenet_tf.data import builtin_shapes, builtin_shapes_dataset, detection_input
from spinenet_tf.litert import evaluate as evaluate_lib
from spinenet_tf.litert import interpreter as interpreter_lib
from spinenet_tf.serving import metadata, representative_data, signatures
from spinenet_tf.serving import tflite_convert, tflite_graph, tflite_input

# One xdist worker runs every user of the detector fixture, so the other is not left waiting on its lock.
pytestmark = [pytest.mark.slow, pytest.mark.litert, pytest.mark.xdist_group("detector_fixture")]

_NUM_VAL = builtin_shapes.SPLIT_SIZES["validation"]  # the whole built-in validation split (200 images)


@pytest.fixture(scope="module")
def detector():
    """The trained detector decoding with class-agnostic NMS: what the TFLite op's default fast NMS computes
    (NMS over each anchor's best class)."""
    model = export_testing.trained_detector()[0]
    model.decode_config = {**model.decode_config, "class_agnostic": True}
    return model


@pytest.fixture(scope="module")
def val_images():
    return [e["image"] for e in builtin_shapes_dataset.as_dataset("validation", _NUM_VAL,
                                                          image_size=export_testing.IMAGE_SIZE).as_numpy_iterator()]


@pytest.fixture(scope="module")
def float_tflite(detector):
    return tflite_convert.convert(detector, "none")


@pytest.fixture(scope="module")
def int8_tflite(detector):
    # 100 training images, prepared as evaluation prepares images (representative_data).
    train = builtin_shapes_dataset.as_dataset("train", 100, image_size=export_testing.IMAGE_SIZE)
    images = representative_data.calibration_images(train, export_testing.IMAGE_SIZE, 100)
    content = tflite_convert.convert(detector, "int8", representative_data.representative_dataset(images))
    return metadata.add_detector_metadata(content, list(builtin_shapes.CLASS_NAMES))


_INVOKE_WITH_XNNPACK = r"""
import sys
import numpy as np
from ai_edge_litert import interpreter as litert
interpreter = litert.Interpreter(model_path=sys.argv[1], num_threads=2)
interpreter.allocate_tensors()
detail = interpreter.get_input_details()[0]
interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], np.float32))
interpreter.invoke()
"""


def _assert_runs_with_xnnpack(content: bytes, tmp_path) -> None:
    """In a child process: with the converter's own int8 ranges, a dead unit's requantization multiplier went past
    what XNNPACK accepts and LiteRT aborted the whole process ("double free"; serving/calibration.py)."""
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    result = subprocess.run([sys.executable, "-c", _INVOKE_WITH_XNNPACK, str(path)], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, f"XNNPACK run failed: {result.stderr.strip().splitlines()[-1:]}"


def _serving_signature(detector):
    """The SavedModel's `serving_default` signature function, traced once (run in-process; tests/serving checks the
    reloaded SavedModel)."""
    return signatures.DetectionModule(detector).signatures()["serving_default"]


def _serving_detections(serving_default, image):
    """The SavedModel signature's detections."""
    outputs = serving_default(tf.constant(image[None]))
    count = int(outputs["num_detections"][0])
    return {"boxes": outputs["detection_boxes"][0, :count].numpy(), "scores": outputs["detection_scores"][0, :count]
            .numpy(), "classes": outputs["detection_classes"][0, :count].numpy()}


def _match(expected: dict, actual: dict, min_score: float, box_tolerance: float) -> int:
    """Every expected detection scoring >= min_score has an actual one of the same class with every box
    coordinate within box_tolerance; returns how many were checked."""
    checked = 0
    for box, score, cls in zip(expected["boxes"], expected["scores"], expected["classes"]):
        if score < min_score:
            continue
        same_class = actual["boxes"][actual["classes"] == cls]
        assert len(same_class), f"no detection of class {cls} (score {score:.3f}) in {actual}"
        error = np.abs(same_class - box).max(axis=1).min()
        assert error <= box_tolerance, f"class {cls} box {box}: nearest is {error:.4f} px away"
        checked += 1
    return checked


def test_float_tflite_has_the_nms_op_and_four_float_outputs(float_tflite):
    model = interpreter_lib.TFLiteModel(float_tflite)
    assert sorted(model.outputs) == sorted(interpreter_lib.DETECTION_OUTPUTS)
    assert all(np.dtype(d["dtype"]) == np.float32 for d in model.outputs.values())
    outputs = model(np.zeros([1, *export_testing.IMAGE_SIZE, 3], np.float32))
    assert {k: v.shape for k, v in outputs.items()} == {"detection_boxes": (1, 100, 4), "detection_classes": (1, 100),
                                                       "detection_scores": (1, 100), "num_detections": (1,)}
    assert tflite_graph.POSTPROCESS_OP.encode() in float_tflite


def _assert_detections_match(detector, model, images) -> None:
    size = export_testing.IMAGE_SIZE[0]
    checked = 0
    serving_default = _serving_signature(detector)
    for image in images:
        expected = _serving_detections(serving_default, image)
        actual = model.detect_image(image)
        # Issue 5: same boxes within 1e-3 of the image size, same classes, both ways. Detections scoring >= 0.2:
        # the op decodes without clipping boxes before NMS, which can swap near-ties at the tail.
        checked += _match(expected, actual, min_score=0.2, box_tolerance=1e-3 * size)
        _match(actual, expected, min_score=0.2, box_tolerance=1e-3 * size)
    assert checked >= 30, f"only {checked} confident detections to compare; is the fixture trained?"


def test_float_tflite_detections_match_the_saved_model_signature(detector, float_tflite, val_images):
    _assert_detections_match(detector, interpreter_lib.TFLiteModel(float_tflite, num_threads=2), val_images[:20])


def test_regular_nms_matches_per_class_saved_model_with_one_thread(val_images):
    # Per-class NMS, as RetinaNet.detect by default. One thread: with more, TF 2.20 / LiteRT 2.3.0's regular-NMS
    # kernel drops every detection of one class (class 2 of 6 with 2 threads, on every image we tried).
    per_class = export_testing.trained_detector()[0]
    assert not per_class.decode_config["class_agnostic"]
    content = tflite_convert.convert(per_class, "none", postprocess=tflite_graph.PostProcessConfig.from_model(
        per_class, use_regular_nms=True))
    _assert_detections_match(per_class, interpreter_lib.TFLiteModel(content, num_threads=1), val_images[:20])


def test_int8_ap_within_one_point_of_float(detector, float_tflite, int8_tflite, tmp_path):
    from spinenet_tf.evaluation import coco

    _assert_runs_with_xnnpack(int8_tflite, tmp_path)
    dataset = export_testing.detection_val_dataset(_NUM_VAL, batch_size=1)

    def tflite_ap(content, use_xnnpack):
        model = interpreter_lib.TFLiteModel(content, num_threads=2, use_xnnpack=use_xnnpack)
        return evaluate_lib.evaluate(model, dataset.as_numpy_iterator())["AP"]

    keras_ap = coco.evaluate(detector, dataset)["AP"]
    float_ap = tflite_ap(float_tflite, True)
    # XNNPACK (LiteRT's and MediaPipe's default on CPU) and the builtin kernels round differently, so both count.
    int8_ap = {"XNNPACK": tflite_ap(int8_tflite, True), "builtin kernels": tflite_ap(int8_tflite, False)}
    print(f"AP keras {keras_ap:.4f} float tflite {float_ap:.4f} int8 tflite " +
          ", ".join(f"{key} {ap:.4f}" for key, ap in int8_ap.items()))
    assert float_ap > 0.25, "the fixture model should detect the shapes (its per-class val AP is >= 0.3)"
    assert abs(float_ap - keras_ap) < 0.005
    for key, ap in int8_ap.items():
        assert abs(ap - float_ap) <= 0.01, f"int8 with {key}: AP {ap:.4f}, float {float_ap:.4f}"


def test_int8_tflite_body_is_integer_with_float_io(int8_tflite):
    from ai_edge_litert import interpreter as litert

    interpreter = litert.Interpreter(model_content=int8_tflite,
                                     experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    details = interpreter.get_tensor_details()
    conv_types = {np.dtype(d["dtype"]) for d in details if "conv" in d["name"].lower()}
    assert np.dtype(np.int8) in conv_types
    assert np.dtype(interpreter.get_input_details()[0]["dtype"]) == np.float32
    assert all(np.dtype(d["dtype"]) == np.float32 for d in interpreter.get_output_details())


def _score_step(content: bytes) -> float:
    """The largest score change one int8 step of the logits the NMS op receives can make: the scale of the tensor
    its DEQUANTIZE reads over 4 (the sigmoid, applied after the op, has slope <= 1/4)."""
    from ai_edge_litert import interpreter as litert

    interpreter = litert.Interpreter(model_content=content,
                                     experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    ops = interpreter._get_ops_details()  # pylint: disable=protected-access
    scores = next(op["inputs"][1] for op in ops if op["op_name"] == tflite_graph.POSTPROCESS_OP)
    dequantize = next(op for op in ops if scores in op["outputs"])
    assert dequantize["op_name"] == "DEQUANTIZE"
    return float(interpreter.get_tensor_details()[dequantize["inputs"][0]]["quantization"][0]) / 4


def test_int8_metadata_runs_in_mediapipe_object_detector_like_litert(int8_tflite, val_images, tmp_path):
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core import base_options as base_options_lib
    import mediapipe as mp

    _assert_runs_with_xnnpack(int8_tflite, tmp_path)  # MediaPipe always applies XNNPACK on CPU
    path = tmp_path / "detector_int8.tflite"
    path.write_bytes(int8_tflite)
    assert metadata.read_associated_files(int8_tflite)[metadata.LABEL_FILE].decode().split("\n") == \
        list(builtin_shapes.CLASS_NAMES)
    threshold = 0.3
    options = vision.ObjectDetectorOptions(base_options=base_options_lib.BaseOptions(model_asset_path=str(path)),
                                           score_threshold=threshold, max_results=100)
    model = interpreter_lib.TFLiteModel(int8_tflite, num_threads=2)
    # Same file, same XNNPACK kernels, and inputs that are exact in float (serving/tflite_input.py: (p - 128) / 128), so
    # scores should agree exactly; one int8 step of the logits (read from the model, as a score change) is the
    # tolerance a single rounding difference anywhere in the body could cause. (With the old 127.5 input encoding
    # they were 4 int8 steps apart at the median: every pixel sat on an int8 rounding boundary.)
    step = _score_step(int8_tflite)
    assert 0 < step <= 1 / 32
    compared = 0
    with vision.ObjectDetector.create_from_options(options) as detector:
        for image in val_images[:20]:
            # Square images: MediaPipe's stretch-resize equals our resize-and-pad, so the inputs are the same.
            result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            ours = model.detect_image(image)
            theirs = [(d.categories[0], d.bounding_box) for d in result.detections]
            for category, b in theirs:
                # mediapipe 1.2.2 fills category_name from the label file but leaves index None.
                index = builtin_shapes.CLASS_NAMES.index(category.category_name)
                match = [i for i, (cls, score) in enumerate(zip(ours["classes"], ours["scores"]))
                         if cls == index and abs(score - category.score) <= step]
                assert match, f"MediaPipe's {category} has no LiteRT twin"
                # Scores within a step of each other can belong to two boxes of a class: take the nearest box.
                theirs_box = np.array([b.origin_y, b.origin_x, b.origin_y + b.height, b.origin_x + b.width])
                ymin, xmin, ymax, xmax = min((ours["boxes"][i] for i in match),
                                             key=lambda box: np.abs(box - theirs_box).max())
                # MediaPipe reports whole pixels, origin and size each rounded down: near edges are < 1 px off, far
                # edges (origin + size) < 2 px.
                np.testing.assert_allclose([b.origin_y, b.origin_x], [ymin, xmin], atol=1.0)
                np.testing.assert_allclose([b.origin_y + b.height, b.origin_x + b.width], [ymax, xmax], atol=2.0)
                compared += 1
            # Both ways: as many LiteRT detections clear the threshold (away from it by a step).
            assert sum(category.score >= threshold + step for category, _ in theirs) == \
                int(np.sum(ours["scores"] >= threshold + step))
    assert compared >= 20


def test_raw_outputs_keep_box_codes_and_sigmoid_scores(detector):
    content = tflite_convert.convert(detector, "none", raw_outputs=True)
    model = interpreter_lib.TFLiteModel(content)
    pixels = np.random.default_rng(0).uniform(0, 255, [*export_testing.IMAGE_SIZE, 3]).astype(np.float32)
    outputs = model(tflite_input.to_tflite_input(pixels))
    expected = detector(detection_input.normalize_image(pixels)[None], training=False)
    np.testing.assert_allclose(outputs["raw_boxes"], expected["box_outputs"], atol=1e-4)
    np.testing.assert_allclose(outputs["raw_scores"], tf.sigmoid(expected["cls_outputs"]), atol=1e-5)
    with pytest.raises(ValueError, match="no TFLite_Detection_PostProcess op"):
        metadata.add_detector_metadata(content, list(builtin_shapes.CLASS_NAMES))


def test_wrong_size_image_is_a_one_line_error(float_tflite):
    model = interpreter_lib.TFLiteModel(float_tflite)
    with pytest.raises(ValueError, match=r"^image of shape \[1, 96, 128, 3\]: the model takes \[1, 128, 128, 3\]"):
        model(np.zeros([1, 96, 128, 3], np.float32))
    with pytest.raises(ValueError, match=r"no such \.tflite file"):
        interpreter_lib.TFLiteModel(os.path.join("missing", "model.tflite"))
