"""int8 activation ranges measured on the float graph (`serving/calibration.py`), on tiny Keras models (fast)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert import interpreter as litert

from spinenet_tf.serving import calibration


def _converter(model) -> tf.lite.TFLiteConverter:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def _dataset(images: np.ndarray):
    def generate():
        for image in images:
            yield [image[None]]
    return generate


def _squeeze_excitation_with_a_dead_unit() -> keras.Model:
    """The pattern of SpineNet-Mobile's first blocks: a 1-channel squeeze-excitation bottleneck whose ReLU never
    fires (bias -100), so the gate is a constant."""
    keras.utils.set_random_seed(0)
    image = keras.Input([8, 8, 3], batch_size=1)
    features = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    squeezed = keras.layers.GlobalAveragePooling2D(keepdims=True)(features)
    dead = keras.layers.Conv2D(1, 1, activation="relu", bias_initializer=keras.initializers.Constant(-100.0),
                               name="dead")(squeezed)
    gate = keras.layers.Conv2D(8, 1, activation="sigmoid", bias_initializer=keras.initializers.Constant(3.0))(dead)
    return keras.Model(image, keras.layers.Conv2D(4, 1)(keras.layers.Multiply()([features, gate])))


def _invoke(content: bytes, image: np.ndarray, use_xnnpack: bool) -> np.ndarray:
    resolver = (litert.OpResolverType.AUTO if use_xnnpack
                else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter = litert.Interpreter(model_content=content, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _tensor_index(content: bytes, name_part: str) -> int:
    interpreter = litert.Interpreter(model_content=content)
    return next(d["index"] for d in interpreter.get_tensor_details() if name_part in d["name"])


def test_dead_unit_gets_the_minimum_range_and_runs_with_xnnpack():
    model = _squeeze_excitation_with_a_dead_unit()
    images = np.random.default_rng(0).uniform(-1, 1, [10, 8, 8, 3]).astype(np.float32)
    converter = _converter(model)
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    converter.representative_dataset = _dataset(images)
    calibrated = converter.convert()
    ranges = calibration.activation_ranges(calibrated, _dataset(images))
    assert ranges[_tensor_index(calibrated, "dead")] == (0.0, calibration.MIN_RANGE)

    content = calibration.quantize(_converter(model), _dataset(images), tf.float32, tf.float32)
    # With the converter's own ranges ([0, 0] here) XNNPACK refuses this model ("failed to create XNNPACK
    # runtime"; a full detector aborts LiteRT instead).
    with_xnnpack = _invoke(content, images[:1], use_xnnpack=True)
    builtin = _invoke(content, images[:1], use_xnnpack=False)
    expected = model(images[:1]).numpy()
    step = np.abs(expected).max() / 64
    np.testing.assert_allclose(with_xnnpack, expected, atol=step)
    np.testing.assert_allclose(builtin, expected, atol=step)


def test_a_rare_outlier_does_not_set_the_range():
    keras.utils.set_random_seed(0)
    image = keras.Input([32, 32, 3], batch_size=1)
    copy = keras.layers.Conv2D(3, 1, use_bias=False)
    model = keras.Model(image, copy(image))
    copy.kernel.assign(np.eye(3, dtype=np.float32)[None, None])
    images = np.random.default_rng(0).uniform(-1, 1, [64, 32, 32, 3]).astype(np.float32)
    images[5, 7, 7, 1] = 50.0   # one value in 196,608: below the 0.001 % tail
    converter = _converter(model)
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    converter.representative_dataset = _dataset(images)
    calibrated = converter.convert()
    ranges = calibration.activation_ranges(calibrated, _dataset(images))
    interpreter = litert.Interpreter(model_content=calibrated)
    input_index = interpreter.get_input_details()[0]["index"]
    low, high = ranges[interpreter.get_output_details()[0]["index"]]
    bin_width = (50.0 + 1.0) / calibration.NUM_BINS   # histogram bins span [min, max] = [-1, 50]
    assert -1.0 - bin_width <= low <= -0.99 and 0.99 <= high <= 1.0 + bin_width, (low, high)
    assert ranges[input_index][1] == pytest.approx(50.0)   # inputs keep their full range
    pinned = calibration.activation_ranges(calibrated, _dataset(images), input_range=(-1.0, 127 / 128))
    assert pinned[input_index] == (-1.0, 127 / 128)


def test_unchanged_ranges_give_the_converters_own_model(monkeypatch):
    model = _squeeze_excitation_with_a_dead_unit()
    images = np.random.default_rng(1).uniform(-1, 1, [10, 8, 8, 3]).astype(np.float32)
    converter = _converter(model)
    converter.representative_dataset = _dataset(images)
    plain = converter.convert()
    monkeypatch.setattr(calibration, "activation_ranges", lambda calibrated, dataset, input_range=None: {})
    ours = calibration.quantize(_converter(model), _dataset(images), tf.float32, tf.float32)
    for image in images[:3]:
        np.testing.assert_array_equal(_invoke(ours, image[None], False), _invoke(plain, image[None], False))


def test_known_input_range_quantizes_pixels_exactly():
    keras.utils.set_random_seed(0)
    image = keras.Input([8, 8, 3], batch_size=1)
    model = keras.Model(image, keras.layers.Conv2D(4, 3, padding="same")(image))
    pixels = np.random.default_rng(0).integers(10, 240, [10, 8, 8, 3])   # never 0 or 255
    images = ((pixels - 128.0) / 128.0).astype(np.float32)
    content = calibration.quantize(_converter(model), _dataset(images), tf.float32, tf.float32,
                                   input_range=(-1.0, 127 / 128))
    interpreter = litert.Interpreter(model_content=content)
    quantize_op = next(op for op in interpreter._get_ops_details()  # pylint: disable=protected-access
                       if op["op_name"] == "QUANTIZE")
    scale, zero_point = interpreter.get_tensor_details()[quantize_op["outputs"][0]]["quantization"]
    assert (scale, zero_point) == (1 / 128, 0)
