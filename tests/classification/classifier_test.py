"""Tests of `spinenet_tf.classification` (`Classifier`, `ClassificationHead`) and `spinenet_tf.build_classifier`.

- Learning: a mobile classifier with the paper's improved protocol (swish, stochastic depth 0.2, label smoothing
  0.1; SpineNet paper §5.5) reaches 100% top-1 in inference mode on six drawn shapes.
- The head is the paper's (the authors' tensorflow/tpu `ClassificationHead` in
  `models/official/detection/modeling/architecture/heads.py`, `aggregation: 'all'` in
  `configs/spinenet/spinenet49_classification.yaml`), checked against NumPy.
- Parameter counts of the ImageNet classifiers against Model Garden's built counts (the paper's Table 11 rounds
  them), `.keras` round trip, input errors.
"""

import re

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw

import spinenet_tf
import testing
from spinenet_tf import registry
from spinenet_tf.classification.head import ClassificationHead
from spinenet_tf.layers.stochastic_depth import StochasticDepth
from spinenet_tf.model_stats import count_params


def draw_shapes(num_images: int, size: int, seed: int = 0):
    """Noisy grey images with one filled shape each (30..80 px, random place); image i is class i % 3.

    Returns uint8 images [B, size, size, 3] and int32 labels [B].
    """
    rng = np.random.default_rng(seed)
    images = np.empty((num_images, size, size, 3), np.uint8)
    labels = np.arange(num_images, dtype=np.int32) % 3
    for i, cls in enumerate(labels):
        image = Image.fromarray(rng.integers(90, 166, (size, size, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        h, w = (int(v) for v in rng.integers(30, 81, 2))
        y0, x0 = int(rng.integers(0, size - h)), int(rng.integers(0, size - w))
        testing.draw_shape(draw, int(cls), y0, x0, h, w)
        images[i] = np.asarray(image)
    return images, labels


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# --- learning ---------------------------------------------------------------------------------------------------

@pytest.mark.slow  # ~2 CPU minutes; `make test` keeps the detector's learning test (tests/detection/retinanet_test.py)
def test_learns_drawn_shapes_with_the_papers_improved_protocol():
    images, labels = draw_shapes(6, 128)
    x = testing.normalize(images)
    keras.utils.set_random_seed(0)
    # BN momentum 0.9: the moving statistics used in inference catch up with the batch statistics in the run.
    model = spinenet_tf.build_classifier("classifier-spinenet-mobile-49xs", num_classes=3, input_shape=(128, 128),
                                         norm_momentum=0.9, label_smoothing=0.1, activation="swish",
                                         stochastic_depth_rate=0.2)

    # swish and stochastic depth reach the backbone's layers.
    layers = list(testing.walk_layers(model.backbone))
    activations = {layer.activation.__name__ for layer in layers if isinstance(layer, keras.layers.Activation)}
    assert activations == {"swish"}  # x * sigmoid(x) (Keras' silu); no relu left
    rates = sorted(layer.rate for layer in layers if isinstance(layer, StochasticDepth))
    # Every residual block drops its branch, block i of n at rate 0.2 * i / n (MG's schedule): the last at 0.2.
    assert rates and rates[0] > 0 and rates[-1] == pytest.approx(0.2)

    model.compile(optimizer=keras.optimizers.Adam(1e-2))  # default loss: softmax CE, label smoothing 0.1
    # The training-mode predictions are right after ~10 steps, the inference-mode ones (moving BN statistics)
    # after ~40 at this learning rate: 60 steps leave a margin.
    history = model.fit(x, labels, batch_size=6, epochs=60, shuffle=False, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]

    # Inference mode: stochastic depth off, moving BN statistics.
    results = model.evaluate(x, labels, batch_size=6, verbose=0, return_dict=True)
    logits = np.asarray(model(x, training=False))
    np.testing.assert_array_equal(np.argmax(logits, axis=-1), labels)
    assert results["top1"] == 1.0
    assert results["top5"] == 1.0  # 3 classes: always
    # The evaluated loss is cross-entropy against targets smoothed as (1 - 0.1) * one_hot + 0.1 / 3.
    targets = 0.9 * np.eye(3)[labels] + 0.1 / 3
    expected_loss = np.mean(-np.sum(targets * log_softmax(logits), axis=-1))
    assert results["loss"] == pytest.approx(expected_loss, rel=1e-4)
    # ... which label smoothing keeps above the targets' entropy, the loss of a perfect fit.
    assert results["loss"] > -np.sum(targets[0] * np.log(targets[0]))

    # Stochastic depth is live in training (BN alone is deterministic for a fixed batch) and off in inference.
    assert not np.allclose(np.asarray(model(x, training=True)), np.asarray(model(x, training=True)))
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(model(x, training=False)))


# --- head -------------------------------------------------------------------------------------------------------

def test_head_is_the_papers_multi_level_average():
    rng = np.random.default_rng(0)
    batch, channels, num_classes = 2, 8, 5
    # P3..P7 of a 128x128 input: 16x16 .. 1x1.
    features = {level: rng.standard_normal((batch, 128 >> level, 128 >> level, channels)).astype(np.float32)
                for level in range(3, 8)}
    head = ClassificationHead(num_classes, min_level=3, max_level=7, dropout_rate=0.5)
    head.build({level: f.shape for level, f in features.items()})
    kernel = rng.standard_normal((channels, num_classes)).astype(np.float32)
    bias = rng.standard_normal(num_classes).astype(np.float32)
    head.set_weights([kernel, bias])
    logits = np.asarray(head(features, training=False))  # dropout is the identity in inference

    # Paper / tensorflow/tpu: each level nearest-upsampled to P3's size, summed, / 5; global mean; dense.
    upsampled = [np.repeat(np.repeat(f, 2 ** (level - 3), axis=1), 2 ** (level - 3), axis=2)
                 for level, f in features.items()]
    pooled = np.mean(np.mean(upsampled, axis=0), axis=(1, 2))
    np.testing.assert_allclose(logits, pooled @ kernel + bias, rtol=1e-5, atol=1e-5)
    # Not the same as Model Garden's top-level-only head: P7 alone would give other logits.
    assert not np.allclose(logits, features[7].mean(axis=(1, 2)) @ kernel + bias, atol=1e-3)


# --- parameters -------------------------------------------------------------------------------------------------

# 1000-class ImageNet classifiers, M params: Model Garden's built counts (what its code builds, tf-models-official
# 2.20.0): backbone 21.83 / 36.26 / 60.25 / 126.59 M + a 1000-way FC (endpoints 256 / 256 / 256 / 512 channels);
# the paper's Table 11 (also in tensorflow/tpu `models/official/detection/MODEL_ZOO.md`) rounds them to
# 22.1 / 36.5 / 60.5 / 127.1.
IMAGENET_PARAMS = {
    "classifier-spinenet-49": 22.09,
    "classifier-spinenet-96": 36.52,
    "classifier-spinenet-143": 60.51,
    "classifier-spinenet-190": 127.1,
}


def test_imagenet_table_names_are_registry_rows():
    assert set(IMAGENET_PARAMS) <= set(registry.CLASSIFIERS)


@pytest.mark.parametrize("name", list(IMAGENET_PARAMS))
def test_imagenet_params_match_reference(name):
    model = spinenet_tf.build_classifier(name, num_classes=1000, input_shape=(128, 128))  # params: any size
    params = count_params(model)
    keras.backend.clear_session()
    assert params / 1e6 == pytest.approx(IMAGENET_PARAMS[name], rel=0.005)


# --- serialization ----------------------------------------------------------------------------------------------

def test_keras_round_trip_gives_identical_predictions(tmp_path):
    keras.utils.set_random_seed(2)
    model = spinenet_tf.build_classifier("classifier-spinenet-mobile-49xs", num_classes=3, input_shape=(128, 256),
                                         dropout_rate=0.2, label_smoothing=0.1)
    x = np.random.default_rng(0).standard_normal((2, 128, 256, 3)).astype(np.float32)
    loaded = testing.assert_keras_round_trip(model, x, tmp_path)
    assert (loaded.num_classes, loaded.dropout_rate, loaded.label_smoothing) == (3, 0.2, 0.1)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


# --- errors -----------------------------------------------------------------------------------------------------

def test_unknown_classifier_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=re.escape("valid names: " + ", ".join(registry.CLASSIFIERS))):
        spinenet_tf.build_classifier("classifier-spinenet-50", num_classes=10)


@pytest.mark.parametrize("num_classes", [0, -3])
def test_num_classes_below_one(num_classes):
    with pytest.raises(ValueError, match=f"num_classes={num_classes}: must be >= 1"):
        spinenet_tf.build_classifier("classifier-spinenet-mobile-49xs", num_classes=num_classes,
                                     input_shape=(128, 128))
