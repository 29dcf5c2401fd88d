"""TFLite classifiers (float32 and int8 with int8 / uint8 I/O) in LiteRT agree with Keras on the validation split.

Slow: trains the shared tiny classifier once per cache (`export_testing`) and converts three times.
"""

from __future__ import annotations

import numpy as np
import pytest

import export_testing
from spinenet_tf.data import builtin_shapes, builtin_shapes_dataset, classification_input
from spinenet_tf.litert import interpreter as interpreter_lib
from spinenet_tf.serving import representative_data
from spinenet_tf.serving import tflite_convert, tflite_input

pytestmark = [pytest.mark.slow, pytest.mark.litert, pytest.mark.xdist_group("classifier_fixture")]

_NUM_VAL = 100


@pytest.fixture(scope="module")
def classifier():
    return export_testing.trained_classifier()[0]


@pytest.fixture(scope="module")
def val_split():
    parser = classification_input.ClassificationInput(export_testing.IMAGE_SIZE)
    examples = builtin_shapes_dataset.as_classification_dataset("validation", _NUM_VAL,
                                                                image_size=export_testing.IMAGE_SIZE)
    pairs = list(examples.map(parser.eval_fn).as_numpy_iterator())
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])   # normalised as in training


@pytest.fixture(scope="module")
def keras_logits(classifier, val_split):
    return classifier.predict(val_split[0], verbose=0)


@pytest.fixture(scope="module")
def calibration():
    train = builtin_shapes_dataset.as_classification_dataset("train", 100, image_size=export_testing.IMAGE_SIZE)
    images = representative_data.calibration_images(train, export_testing.IMAGE_SIZE, 100, task="classification")
    return representative_data.representative_dataset(images)


def _top1(model: interpreter_lib.TFLiteModel, images: np.ndarray) -> np.ndarray:
    return np.array([np.argmax(model(tflite_input.tflite_input_from_normalized(image))["logits"]) for image in images])


def test_float_tflite_top1_equals_keras(classifier, val_split, keras_logits):
    images, labels = val_split
    model = interpreter_lib.TFLiteModel(tflite_convert.convert(classifier, "none"), num_threads=2)
    tflite_logits = np.concatenate([model(tflite_input.tflite_input_from_normalized(image))["logits"]
                                    for image in images])
    np.testing.assert_allclose(tflite_logits, keras_logits, atol=1e-3 * np.abs(keras_logits).max())
    np.testing.assert_array_equal(tflite_logits.argmax(-1), keras_logits.argmax(-1))
    assert np.mean(keras_logits.argmax(-1) == labels) > 1.5 / builtin_shapes.NUM_CLASSES  # better than chance


# An int8 logit is a multiple of its tensor's step, (max - min) / 255 of the logits' range (0.066 on the fixture);
# two classes closer than a few steps can swap in int8 whatever the calibration. Measured on the fixture (100 val
# images, 2026-12-02): every flip had a Keras top-2 margin under 0.08 (1.2 steps); 8 of the 100 images have such a
# margin, so overall agreement was 0.92-0.94, and a 0.95 bound failed or passed with the fixture's training run.
# With full min/max ranges instead of the percentile ones, one flip had a margin of 0.28 (4.2 steps).
_CONFIDENT_STEPS = 6


@pytest.mark.parametrize("io_type", ["int8", "uint8", "float32"])
def test_int8_tflite_top1_agrees_with_keras(classifier, val_split, keras_logits, calibration, io_type):
    # Top-1 must agree wherever Keras' top-2 margin is at least _CONFIDENT_STEPS int8 steps of the logits; below
    # that a near-tie may go either way. How many images are that confident depends on the fixture's training run,
    # which is not bit-reproducible on CPU (over 40% in one run, 33% in a fresh-cache CI run of 2026-12-06, with
    # agreement 1.0 on them both times): at least 20 of the 100 keeps the check from running on a handful.
    images, _ = val_split
    content = tflite_convert.convert(classifier, "int8", calibration, io_type=io_type)
    model = interpreter_lib.TFLiteModel(content, num_threads=2)
    assert np.dtype(model.input["dtype"]) == np.dtype(io_type)
    agree = _top1(model, images) == keras_logits.argmax(-1)
    top2 = np.sort(keras_logits, axis=-1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    confident = margin >= _CONFIDENT_STEPS * (keras_logits.max() - keras_logits.min()) / 255
    print(f"int8 ({io_type} I/O) top-1 agreement with Keras: {agree.mean():.3f} overall, "
          f"{agree[confident].mean():.3f} on the {confident.sum()} images of margin >= {_CONFIDENT_STEPS} steps; "
          f"flipped margins {[round(float(m), 3) for m in margin[~agree]]}")
    assert confident.sum() >= 20
    assert agree[confident].all(), margin[confident & ~agree]
    assert agree.mean() >= 0.85


def test_integer_io_is_refused_for_detectors_and_float_models(classifier):
    with pytest.raises(ValueError, match=r"^--io_type=int8: integer input/output needs --quantization=int8$"):
        tflite_convert.convert(classifier, "dynamic", io_type="int8")
    with pytest.raises(ValueError, match=r"^--quantization=int8 needs calibration images"):
        tflite_convert.convert(classifier, "int8")
