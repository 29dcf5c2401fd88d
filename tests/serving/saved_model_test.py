"""SavedModel export: the serving signatures reloaded in a fresh process give the Keras model's detections.

The detector test is slow (it uses the shared briefly trained model of `export_testing`); the classifier and
output-path tests are fast."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import export_testing
import spinenet_tf
from spinenet_tf.data import builtin_shapes, classification_input, detection_input
from spinenet_tf.detection import box_ops
from spinenet_tf.serving import saved_model

_SIZE = (128, 128)

# Runs in a new interpreter: only TensorFlow and the SavedModel, none of spinenet_tf's Python code.
_RELOAD = r"""
import json, sys
import numpy as np
import tensorflow as tf
path, inputs, out = sys.argv[1:]
data = np.load(inputs, allow_pickle=True)
loaded = tf.saved_model.load(path)
results = {"signatures": sorted(loaded.signatures)}
for i, image in enumerate(data["images"]):
    outputs = loaded.signatures["serving_default"](images=tf.constant(image[None]))
    results[f"images_{i}"] = {k: v.numpy().tolist() for k, v in outputs.items()}
encoded = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant(list(data["encoded"])))
results["bytes"] = {k: v.numpy().tolist() for k, v in encoded.items()}
with open(out, "w") as f:
    json.dump(results, f)
"""


def _reload_in_fresh_process(path, images, encoded, tmp_path) -> dict:
    inputs, out, script = tmp_path / "inputs.npz", tmp_path / "out.json", tmp_path / "reload.py"
    np.savez(inputs, images=np.array(images, dtype=object), encoded=np.array(encoded, dtype=object))
    script.write_text(_RELOAD)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, str(script), str(path), str(inputs), str(out)], check=True, env=env,
                   cwd=tmp_path)
    return json.loads(out.read_text())


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _keras_detections(model, image: np.ndarray) -> dict:
    """What serving must return, computed with the library's eval pipeline and Keras."""
    resized, info = detection_input.resize_and_pad(image, _SIZE)
    detections = {k: v.numpy()[0] for k, v in model.detect(detection_input.normalize_image(resized)[None]).items()}
    count = int(detections["num_detections"])
    info = info.numpy()
    boxes = np.clip(box_ops.to_original_pixels(detections["boxes"][:count], info), 0,
                    np.tile(info[0], 2))
    return {"boxes": boxes, "scores": detections["scores"][:count], "classes": detections["classes"][:count],
            "info": info}


def _assert_same(served: dict, row: int, expected: dict) -> None:
    count = int(served["num_detections"][row])
    assert count == len(expected["scores"]) > 0
    np.testing.assert_allclose(np.array(served["detection_boxes"][row])[:count], expected["boxes"], atol=1e-3)
    np.testing.assert_allclose(np.array(served["detection_scores"][row])[:count], expected["scores"], atol=1e-5)
    np.testing.assert_array_equal(np.array(served["detection_classes"][row])[:count], expected["classes"])
    np.testing.assert_allclose(np.array(served["image_info"][row]), expected["info"], rtol=1e-6)
    # Padding rows are zero, boxes lie inside the original image.
    assert not np.any(np.array(served["detection_boxes"][row])[count:])
    height, width = expected["info"][0]
    assert np.all(np.array(served["detection_boxes"][row])[:count] <= [height, width, height, width])


@pytest.mark.slow
@pytest.mark.xdist_group("detector_fixture")
def test_detection_saved_model_matches_keras_in_a_fresh_process(tmp_path):
    # Trained (the shared fixture): an untrained head scores every anchor near its prior 0.01, so NMS would
    # choose among ties and the comparison would test float noise.
    model, _ = export_testing.trained_detector()
    square = builtin_shapes.generate_example(0, "validation", _SIZE)["image"]
    wide = builtin_shapes.generate_example(1, "validation", (96, 160))["image"]      # scaled 0.8, padded below
    large = builtin_shapes.generate_example(2, "validation", (256, 200))["image"]    # scaled 0.5, padded right
    path = saved_model.export_saved_model(model, str(tmp_path / "detector"))
    served = _reload_in_fresh_process(path, [square, wide, large], [_png(square), _png(large)], tmp_path)

    assert served["signatures"] == ["serve_image_bytes", "serving_default"]
    for i, image in enumerate([square, wide, large]):
        _assert_same(served[f"images_{i}"], 0, _keras_detections(model, image))
    _assert_same(served["bytes"], 0, _keras_detections(model, square))
    _assert_same(served["bytes"], 1, _keras_detections(model, large))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".detector")]  # no temporary left


def test_classification_saved_model_logits_and_probabilities(tmp_path):
    keras.utils.set_random_seed(2)
    model = spinenet_tf.build_classifier("classifier-spinenet-mobile-49xs", num_classes=4, input_shape=_SIZE)
    image = builtin_shapes.generate_classification_example(0, "validation", _SIZE)["image"]
    path = saved_model.export_saved_model(model, str(tmp_path / "classifier"))
    loaded = tf.saved_model.load(path)
    outputs = loaded.signatures["serving_default"](images=tf.constant(image[None]))
    inputs, _ = classification_input.ClassificationInput(_SIZE).eval_fn({"image": image, "label": 0})
    expected = model(inputs[None], training=False).numpy()
    np.testing.assert_allclose(outputs["logits"].numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), tf.nn.softmax(expected).numpy(), rtol=1e-4,
                               atol=1e-6)
    encoded = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant([_png(image)]))
    np.testing.assert_allclose(encoded["logits"].numpy(), expected, rtol=1e-4, atol=1e-5)


def test_unwritable_output_fails_in_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    model = spinenet_tf.build_classifier("classifier-spinenet-mobile-49xs", num_classes=2, input_shape=_SIZE)
    with pytest.raises(ValueError, match=r"^--output=.*missing.*does not exist$"):
        saved_model.export_saved_model(model, str(tmp_path / "missing" / "model"))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"^--output=.*a_file/model: .*a_file is not a directory$"):
        saved_model.export_saved_model(model, str(tmp_path / "a_file" / "model"))
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    # The check asks os.access, which tells root that it may write anywhere: it answers here as it does for every
    # other user (and as it does for root on a read-only mount), so the test runs, and means the same, as any user.
    real_access = os.access

    def access(path, mode, **kwargs):
        if os.path.abspath(path) == str(read_only) and mode & os.W_OK:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    try:
        with pytest.raises(ValueError, match=r"^--output=.*read_only/model: the directory .*read_only is not "
                                             r"writable$"):
            saved_model.export_saved_model(model, str(read_only / "model"))
    finally:
        read_only.chmod(0o755)
    assert os.listdir(read_only) == []
