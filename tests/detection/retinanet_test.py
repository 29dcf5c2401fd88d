"""Tests of `spinenet_tf.detection.retinanet.RetinaNet` and `spinenet_tf.build_detector`.

- Learning: a mobile detector overfits four drawn scenes (shapes with known boxes and classes); the loss falls at
  least 10x and `detect` (inference mode) recovers every ground-truth box at IoU >= 0.5 with the right class.
- Parameters: within 1% of the SpineNet paper's table (equal to Model Garden's RetinaNet for every row of
  `registry.DETECTORS`: tests/convert_test.py, which converts its weights and compares outputs too).
- FLOPs (multiply-adds) against the paper (R0-SP53's within 1%), serialization, and the errors users meet.

Golden numbers: SpineNet paper (Du et al., CVPR 2020, arXiv:1912.05027, Table 4), the published SpineNet-Mobile
(Du et al., ECCV 2020, arXiv:2010.11426) figures in Model Garden's `official/vision/MODEL_GARDEN.md` and the
authors' tensorflow/tpu `models/official/detection/MODEL_ZOO.md`, and Model Garden (tf-models-official 2.20.0,
built in tests/convert_test.py).
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageDraw

import spinenet_tf
import testing
from spinenet_tf import registry
from spinenet_tf.detection import losses
from spinenet_tf.detection.targets import assign_targets


# --- helpers ----------------------------------------------------------------------------------------------------

def draw_scenes(num_images: int, size: int, max_shapes: int = 3, seed: int = 0):
    """Noisy grey images with 1..max_shapes non-overlapping shapes of 20..60 px.

    Returns uint8 images [B, size, size, 3], boxes [B, max_shapes, 4] and classes [B, max_shapes], padded with zero
    boxes and class -1. Image i holds 1 + i % max_shapes shapes and its first shape is class i % 3, so four images
    cover every class and every shape count.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((num_images, size, size, 3), np.uint8)
    boxes = np.zeros((num_images, max_shapes, 4), np.float32)
    classes = np.full((num_images, max_shapes), -1, np.int32)
    for i in range(num_images):
        image = Image.fromarray(rng.integers(90, 166, (size, size, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        count = 0
        while count < 1 + i % max_shapes:
            h, w = (int(v) for v in rng.integers(20, 61, 2))
            y0, x0 = int(rng.integers(2, size - 2 - h)), int(rng.integers(2, size - 2 - w))
            box = np.array([y0, x0, y0 + h, x0 + w], np.float32)
            if count and iou(box, boxes[i, :count], margin=4).max() > 0:
                continue  # keep shapes 4 px apart, so every box is exactly the drawn shape's
            cls = i % 3 if count == 0 else int(rng.integers(0, 3))
            boxes[i, count] = testing.draw_shape(draw, cls, y0, x0, h, w)
            classes[i, count] = cls
            count += 1
        images[i] = np.asarray(image)
    return images, boxes, classes


def iou(box: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """IoU of one [ymin, xmin, ymax, xmax] box with each row of `boxes` (box grown by `margin` for overlap tests)."""
    box = box + np.array([-margin, -margin, margin, margin], np.float32)
    height = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    width = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = height * width
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def detection_loss(model, x, targets) -> float:
    """Focal + Huber loss of the model's inference-mode outputs (no weight decay)."""
    outputs = model(x, training=False)
    return float(losses.retinanet_loss(targets, outputs["cls_outputs"], outputs["box_outputs"],
                                       **model.loss_config)["loss"])


@pytest.fixture(scope="module")
def small_detector():
    """A mobile detector at a non-square size, decoding with a low score threshold so that an untrained head
    (prior 0.01) still returns detections."""
    keras.utils.set_random_seed(1)
    return spinenet_tf.build_detector("retinanet-spinenet-mobile-49xs", num_classes=3, input_shape=(128, 256),
                                      score_threshold=0.005, max_detections=20)


# --- learning ---------------------------------------------------------------------------------------------------

def test_overfits_drawn_scenes_and_detects_every_box():
    size, steps = 128, 100
    images, boxes, classes = draw_scenes(4, size)
    x = testing.normalize(images)
    keras.utils.set_random_seed(0)
    # BN momentum 0.9 (not 0.99): the moving statistics the inference path uses catch up with the batch statistics
    # within the run (0.9**100 ~ 3e-5). weight_decay 0 makes the fit loss the detection loss alone.
    model = spinenet_tf.build_detector("retinanet-spinenet-mobile-49xs", num_classes=3, input_shape=(size, size),
                                       norm_momentum=0.9, weight_decay=0.0)
    targets = assign_targets(model.anchor_boxes, boxes, classes)
    assert np.all(np.sum(targets["positive"], axis=1) > 0)
    model.compile(optimizer=keras.optimizers.Adam(5e-3))
    # Keras 3 (TF backend, no strategy) otherwise creates the Adam slots inside the first traced step, so the
    # train step is traced twice; building them first saves one trace (~40% of the first step's CPU time).
    # One step per epoch: history["loss"][0] is the loss of the untrained model, [-1] that of the last step.
    history = model.fit(x, targets, batch_size=4, epochs=steps, shuffle=False, verbose=0).history["loss"]
    assert history[-1] <= history[0] / 10, f"training loss {history[0]:.4f} -> {history[-1]:.4f}"
    # The same 10x in inference mode (moving BN statistics), which is what detections are made with.
    assert detection_loss(model, x, targets) <= history[0] / 10

    detections = {key: np.asarray(value) for key, value in model.detect(x).items()}  # training=False
    for i in range(len(images)):
        count = detections["num_detections"][i]
        found, found_classes = detections["boxes"][i, :count], detections["classes"][i, :count]
        scores = detections["scores"][i, :count]
        for box, cls in zip(boxes[i], classes[i]):
            if cls < 0:
                continue
            hit = (found_classes == cls) & (iou(box, found) >= 0.5)
            # Score >= 0.5, not just above the 0.05 decoding threshold: the box is found, not guessed.
            assert np.any(hit & (scores >= 0.5)), (
                f"image {i}: ground truth {box.tolist()} class {cls} not detected; got {found.round(1).tolist()} "
                f"classes {found_classes.tolist()} scores {scores.round(3).tolist()}")


# --- parameters -------------------------------------------------------------------------------------------------

# Model Garden's count of every registry detector at 91 classes (the paper's heads): tests/convert_test.py
# (`test_retinanet_checkpoint_matches_model_garden` builds both, compares the counts and the outputs after conversion).


# Paper figures (91-class heads, M params) and where they come from. Keys must be registry names (checked below).
PAPER_PARAMS = {
    # 11.27M is Model Garden's built count (tf-models-official 2.20.0): Google's released code (Model Garden and
    # tensorflow/tpu: block specs, width 0.65, 128-ch endpoints and head) builds 11.27M; the paper's 12.0M (11.9M in
    # tensorflow/tpu `models/official/detection/MODEL_ZOO.md`) is not reproducible from it, cause unconfirmed. We
    # hold to the code; tests/convert_test.py compares with Model Garden's live count exactly.
    "retinanet-spinenet-49s": 11.27,
    "retinanet-spinenet-49": 28.5,    # SpineNet paper Table 4, SpineNet-49 @640
    "retinanet-spinenet-96": 43.0,    # SpineNet paper Table 4, SpineNet-96 @1024
    "retinanet-spinenet-143": 66.9,   # SpineNet paper Table 4, SpineNet-143 @1280 (67.0 in tensorflow/tpu MODEL_ZOO.md)
    "retinanet-spinenet-190": 163.6,  # SpineNet paper Table 4, SpineNet-190 @1280
    # Mobile SpineNet-49: 2.32M in Model Garden's `official/vision/MODEL_GARDEN.md`, 2.34M "SpineNetMB-49" in
    # tensorflow/tpu `models/official/detection/MODEL_ZOO.md`; 2.338M is Model Garden's built count
    # (tf-models-official 2.20.0), which both published figures round to. tests/convert_test.py compares with the
    # live count exactly.
    "retinanet-spinenet-mobile-49": 2.338,
}


def test_paper_table_names_are_registry_rows():
    assert set(PAPER_PARAMS) <= set(registry.DETECTORS)


@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_params_match_paper(name):
    assert testing.detector_params(name) / 1e6 == pytest.approx(PAPER_PARAMS[name], rel=0.01)


# --- FLOPs ------------------------------------------------------------------------------------------------------

# (name, input size, B multiply-adds), 91-class heads; batch norm counts 0 (folded into the conv at inference).
PAPER_FLOPS = [
    # 31.0B is Model Garden's built count (what its code builds, tf-models-official 2.20.0); the paper's 33.8B is
    # not reproducible from it (see the 49S parameter note). Held to the code.
    ("retinanet-spinenet-49s", 640, 31.0),
    ("retinanet-spinenet-49", 640, 85.4),          # SpineNet paper Table 4
    ("retinanet-spinenet-mobile-49", 384, 1.0),    # tensorflow/tpu MODEL_ZOO.md "SpineNetMB-49"; MODEL_GARDEN.md
]
PAPER_FLOPS_LARGE = [
    ("retinanet-spinenet-96", 1024, 265.4),        # SpineNet paper Table 4
    ("retinanet-spinenet-143", 1280, 524.4),       # SpineNet paper Table 4 (524.0 in tensorflow/tpu MODEL_ZOO.md)
    ("retinanet-spinenet-190", 1280, 1885.0),      # SpineNet paper Table 4
]


def _check_flops(name, size, expected_billions):
    flops = testing.detector_flops(name, size)
    # 3%: the papers round to 0.1B and count with their own tools; element-wise ops (swish's multiply, SE gating)
    # are counted by some tools and not others, which matters most for the mobile models.
    assert flops / 1e9 == pytest.approx(expected_billions, rel=0.03)


@pytest.mark.parametrize("name, size, billions", PAPER_FLOPS, ids=[row[0] for row in PAPER_FLOPS])
def test_flops_match_paper(name, size, billions):
    _check_flops(name, size, billions)


@pytest.mark.slow
@pytest.mark.parametrize("name, size, billions", PAPER_FLOPS_LARGE, ids=[row[0] for row in PAPER_FLOPS_LARGE])
def test_flops_match_paper_large_models(name, size, billions):
    _check_flops(name, size, billions)


def test_r0_sp53_flops_match_paper():
    # R0-SP53 (paper §3.3; its table in spinenet_tf/backbones/block_specs.py) at 640 with SpineNet-49's head:
    # 95.0 B multiply-adds, the paper's R0-SP53 row (Table 3), which §5.3's "SpineNet-49 ... 10% fewer FLOPs"
    # also gives: 85.4 / 0.9 = 94.9. Measured here: 94.96 B. Held to 1%, tighter than the 3% of the rows above.
    # It checks the allocation and the resampling more than the order: a bottleneck costs about the same at L2, L3
    # and L4 (width x2, area /4), so moving one level there changes the total by < 0.1%.
    assert testing.detector_flops("retinanet-r0-sp53", 640) / 1e9 == pytest.approx(95.0, rel=0.01)


# --- serialization ----------------------------------------------------------------------------------------------

def test_keras_round_trip_gives_identical_outputs_and_detections(small_detector, tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 128, 256, 3)).astype(np.float32)
    loaded = testing.assert_keras_round_trip(small_detector, x, tmp_path)
    for expected, actual in zip(keras.tree.flatten(small_detector(x, training=False)),
                                keras.tree.flatten(loaded(x, training=False))):
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))
    np.testing.assert_array_equal(loaded.anchor_boxes, small_detector.anchor_boxes)
    expected = small_detector.predict(x, verbose=0)
    actual = loaded.predict(x, verbose=0)
    assert np.all(expected["num_detections"] > 0)  # not a vacuous comparison of empty padding
    assert sorted(actual) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


# --- errors -----------------------------------------------------------------------------------------------------

def test_unknown_detector_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=re.escape("valid names: " + ", ".join(registry.DETECTORS))):
        spinenet_tf.build_detector("retinanet-spinenet-50", num_classes=3)


@pytest.mark.parametrize("num_classes", [0, -1])
def test_num_classes_below_one(num_classes):
    with pytest.raises(ValueError, match=f"num_classes={num_classes}: must be >= 1"):
        spinenet_tf.build_detector("retinanet-spinenet-mobile-49xs", num_classes=num_classes, input_shape=(128, 128))


def test_input_size_not_divisible_by_128():
    with pytest.raises(ValueError, match="input width 200 is not divisible by 128"):
        spinenet_tf.build_detector("retinanet-spinenet-mobile-49xs", num_classes=3, input_shape=(128, 200))


def test_boxes_with_five_coordinates():
    anchors = tf.constant([[0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(ValueError, match=r"gt_boxes must have a last dimension of 4"):
        assign_targets(anchors, tf.zeros([1, 2, 5]), tf.zeros([1, 2], tf.int32))
    targets = assign_targets(anchors, tf.constant([[[0.0, 0.0, 10.0, 10.0]]]), tf.constant([[0]]))
    with pytest.raises(ValueError, match=r"box_outputs must have a last dimension of 4"):
        losses.retinanet_loss(targets, tf.zeros([1, 1, 3]), tf.zeros([1, 1, 5]))


def test_fit_without_targets(small_detector):
    small_detector.compile(optimizer="sgd")
    x = np.zeros((1, 128, 256, 3), np.float32)
    with pytest.raises(ValueError, match=r"RetinaNet.fit needs targets: y = assign_targets"):
        small_detector.fit(x, epochs=1, verbose=0)
