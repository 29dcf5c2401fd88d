"""SavedModel export of a Mask R-CNN: `detection_masks` in both serving signatures, reproduced in a fresh process.

A tiny Mask R-CNN (SpineNet-49S shrunk, 128x128, the inference fixture of tests/detection/maskrcnn/model_test.py)
with its RPN predictor kernels redrawn at unit output variance, so objectness scores are spread and the proposal
top-k and NMS never choose among near-ties (with the std-1e-5 initializers every anchor scores ~0.5); detections
come from the 0.05 score threshold, which 4 classes always pass. It is exported with
`saved_model.export_saved_model` (what `python -m spinenet_tf.export --format=saved_model` runs after restoring the
checkpoint) and reloaded by a new interpreter that imports TensorFlow only. The expectation is the Keras model on
the library's eval preprocessing; tolerances: boxes 1e-3 px and scores 1e-5 (as the RetinaNet test: the same ops
traced in a graph instead of run eagerly, float32 noise ~1e-6 relative), masks 1e-5 (probabilities in [0, 1]) and
1e-4 where the serving graph resamples them.
"""

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
from scipy import ndimage

import spinenet_tf
from spinenet_tf.data import builtin_shapes, detection_input
from spinenet_tf.detection import box_ops
from spinenet_tf.serving import exporter, saved_model, signatures

_SIZE = (128, 128)
_MODEL = "maskrcnn-spinenet-49s"
_NUM_CLASSES = 4
_OVERRIDES = dict(filter_size_scale=0.25, endpoints_num_filters=16, rpn_num_filters=16, box_num_convs=1,
                  box_num_filters=8, box_fc_dims=32, mask_num_convs=1, mask_num_filters=8, rpn_num_proposals=64,
                  max_detections=16)

# A new interpreter: only TensorFlow and the SavedModel, none of spinenet_tf's Python code.
_RELOAD = r"""
import json, sys
import numpy as np
import tensorflow as tf
path, inputs, out = sys.argv[1:]
data = np.load(inputs, allow_pickle=True)
loaded = tf.saved_model.load(path)
results = {"signatures": sorted(loaded.signatures)}
results["images"] = [{k: v.numpy().tolist() for k, v in
                      loaded.signatures["serving_default"](images=tf.constant(image[None])).items()}
                     for image in data["images"]]
encoded = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant(list(data["encoded"])))
results["bytes"] = {k: v.numpy().tolist() for k, v in encoded.items()}
with open(out, "w") as f:
    json.dump(results, f)
"""


def _spread_predictors(model) -> None:
    """Redraws the near-zero kernels (the RPN predictors' std-1e-5 initializers, Model Garden's) at unit output
    variance; the box and class predictors (std 0.001 / 0.01) may stay."""
    rng = np.random.default_rng(5)
    for variable in model.trainable_weights:
        shape = tuple(variable.shape)
        if len(shape) >= 2 and np.std(variable.numpy()) < 1e-3:
            variable.assign(rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape).astype(np.float32))


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(3)
    model = spinenet_tf.build_detector(_MODEL, num_classes=_NUM_CLASSES, input_shape=_SIZE, **_OVERRIDES)
    _spread_predictors(model)
    return model


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _reload_in_fresh_process(path: str, images, encoded, tmp_path) -> dict:
    inputs, out, script = tmp_path / "inputs.npz", tmp_path / "out.json", tmp_path / "reload.py"
    np.savez(inputs, images=np.array(images, dtype=object), encoded=np.array(encoded, dtype=object))
    script.write_text(_RELOAD)
    subprocess.run([sys.executable, str(script), path, str(inputs), str(out)], check=True, cwd=tmp_path,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(out.read_text())


def _resampled(mask: np.ndarray, box: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """`mask` (cells tiling `box`) sampled bilinearly at the cell centres of `frame`, edge cells extended."""
    size = mask.shape[-1]
    centres = (np.arange(size) + 0.5) / size
    rows = (frame[0] + centres * (frame[2] - frame[0]) - box[0]) / (box[2] - box[0]) * size - 0.5
    cols = (frame[1] + centres * (frame[3] - frame[1]) - box[1]) / (box[3] - box[1]) * size - 0.5
    grid = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(mask.astype(np.float64), grid, order=1, mode="nearest")


def _keras_outputs(model, image: np.ndarray) -> dict:
    """What serving must return for one image: the Keras model's detections, boxes in original pixels."""
    resized, info = detection_input.resize_and_pad(image, _SIZE)
    out = {k: np.asarray(v)[0] for k, v in model(detection_input.normalize_image(resized)[None], training=False).items()}
    count, info = int(out["num_detections"]), info.numpy()
    unclipped = box_ops.to_original_pixels(out["boxes"][:count], info)
    boxes = np.clip(unclipped, 0, np.tile(info[0], 2))
    masks = out["masks"][:count].copy()
    clipped = np.flatnonzero(np.any(np.abs(boxes - unclipped) > 1e-3, axis=1))
    for k in clipped:
        masks[k] = _resampled(masks[k], unclipped[k], boxes[k])
    return {"detection_boxes": boxes, "detection_scores": out["scores"][:count],
            "detection_classes": out["classes"][:count], "detection_masks": masks, "clipped": clipped,
            "image_info": info}


# Absolute tolerances on the rows below num_detections (module docstring).
_TOLERANCES = {"detection_boxes": 1e-3, "detection_scores": 1e-5, "detection_classes": 0, "detection_masks": 1e-4}


def _assert_same(served: dict, row: int, expected: dict) -> None:
    count = int(served["num_detections"][row])
    assert count == len(expected["detection_scores"]) > 0
    for key, atol in _TOLERANCES.items():
        np.testing.assert_allclose(np.array(served[key][row])[:count], expected[key], atol=atol, rtol=0, err_msg=key)
    masks = np.array(served["detection_masks"][row])
    assert masks.shape == (_OVERRIDES["max_detections"], 28, 28)
    inside = np.setdiff1d(np.arange(count), expected["clipped"])   # the model's masks, not resampled
    np.testing.assert_allclose(masks[inside], expected["detection_masks"][inside], atol=1e-5, rtol=0)
    assert not np.any(masks[count:]) and not np.any(np.array(served["detection_boxes"][row])[count:])
    np.testing.assert_allclose(np.array(served["image_info"][row]), expected["image_info"], rtol=1e-6)


# Slow: tracing the model into both signatures and loading them again take ~3 CPU-minutes even this small.
@pytest.mark.slow
def test_saved_model_masks_match_keras_in_a_fresh_process(tiny_model, tmp_path):
    # Square; scale 1 padded below; scale 0.5 padded right. The padded ones have boxes reaching into the padding.
    images = [builtin_shapes.generate_example(i, "validation", size)["image"]
              for i, size in enumerate([_SIZE, (96, 128), (256, 200)])]
    served = _reload_in_fresh_process(saved_model.export_saved_model(tiny_model, str(tmp_path / "maskrcnn")), images,
                                      [_png(images[0]), _png(images[2])], tmp_path)

    assert served["signatures"] == ["serve_image_bytes", "serving_default"]
    expected = [_keras_outputs(tiny_model, image) for image in images]
    cases = [(outputs, 0, expectation) for outputs, expectation in zip(served["images"], expected)]
    for outputs, row, expectation in cases + [(served["bytes"], 0, expected[0]), (served["bytes"], 1, expected[2])]:
        _assert_same(outputs, row, expectation)
    # The resampling of masks was exercised.
    assert len(expected[1]["clipped"]) + len(expected[2]["clipped"]) > 0
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".maskrcnn")]  # no temporary left


def test_tflite_export_of_a_mask_rcnn_fails_in_one_line_before_building_it(tmp_path):
    from spinenet_tf.training.config import TrainConfig

    # A model_dir with a config and no checkpoint: the refusal must come before the model is built or restored.
    model_dir = tmp_path / "run"
    TrainConfig(task="instance_segmentation", model=_MODEL, model_dir=str(model_dir), image_size=_SIZE,
                num_classes=_NUM_CLASSES, model_overrides=_OVERRIDES).save()
    output = tmp_path / "out"
    output.mkdir()
    with pytest.raises(ValueError, match=r"^--format=tflite: maskrcnn-spinenet-49s is a Mask R-CNN, which cannot be "
                                         r"converted to TFLite; use --format=saved_model$"):
        exporter.export(exporter.ExportConfig(model_dir=str(model_dir), format="tflite",
                                              output=str(output / "maskrcnn.tflite")))
    assert os.listdir(output) == []


def test_reframe_masks_keeps_a_mask_in_its_own_box_and_resamples_into_a_sub_box():
    rng = np.random.default_rng(0)
    masks = rng.uniform(0, 1, (2, 3, 28, 28)).astype(np.float32)
    boxes = np.array([[[10, 20, 60, 50], [0, 0, 5, 90], [-8, 30, 40, 140]]] * 2, np.float32)
    np.testing.assert_allclose(signatures.reframe_masks(masks, boxes, boxes).numpy(), masks, atol=1e-5)
    frames = np.clip(boxes, 0, [32, 32, 32, 128]).astype(np.float32)   # an image of 32 x 128
    reframed = signatures.reframe_masks(masks, boxes, frames).numpy()
    assert np.abs(reframed[:, 2] - masks[:, 2]).max() > 0.1   # the clipped box's mask did move
    for b in range(2):
        for k in range(3):
            np.testing.assert_allclose(reframed[b, k], _resampled(masks[b, k], boxes[b, k], frames[b, k]), atol=1e-5)
