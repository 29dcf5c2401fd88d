"""TFLite conversion of a `RetinaNet` (with on-device NMS) or a `Classifier`, float or quantized: `convert` turns
the graph of `tflite_graph` into .tflite bytes.

The graph is saved as a SavedModel and converted from there, as Model Garden does (`saved_model_converter`).

Quantization (MG `export_tflite_lib.convert_tflite_model` names in brackets):
    none     float32
    fp16     float16 weights, float compute on CPU  [fp16]
    dynamic  int8 weights, float activations        [default]
    int8     int8 weights and activations, integer-only builtin ops, calibrated on a representative dataset
             [int8_full_fp32_io]; detectors keep float32 I/O (the NMS op's outputs must stay float),
             classifiers may take int8 / uint8 I/O [int8_full_int8_io / int8_full]. Activation ranges are
             percentile-clipped histograms of the float graph's values (`calibration.py`), not the converter's
             absolute min/max. The input offset, the box clipping and the kept scores' sigmoid stay float32
             (`tflite_graph.INPUT_SCOPE`, `CLIP_SCOPE`, `SCORE_SCOPE`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf
from absl import logging

from spinenet_tf.serving import calibration, tflite_flatbuffer, tflite_graph, tflite_input

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
IO_TYPES = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}


def convert(model, quantization: str = "none",
            representative_dataset: Callable[[], Iterable[list[np.ndarray]]] | None = None,
            io_type: str = "float32", postprocess: tflite_graph.PostProcessConfig | None = None,
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
    detector = tflite_graph.is_detector(model)
    if quantization == "int8" and representative_dataset is None:
        raise ValueError("--quantization=int8 needs calibration images: set --representative_data")
    if io_type != "float32" and quantization != "int8":
        raise ValueError(f"--io_type={io_type}: integer input/output needs --quantization=int8")
    if io_type != "float32" and detector:
        raise ValueError(f"--io_type={io_type}: detectors keep float32 input/output (the NMS op's outputs must be "
                         "float; MediaPipe requires float outputs)")
    logging.info("building the TFLite graph of %s%s ...", model.name,
                 "" if not detector else " (raw outputs)" if raw_outputs else " with the NMS op")
    module = (tflite_graph.TFLiteDetectionModule(model, postprocess, raw_outputs) if detector
              else tflite_graph.TFLiteClassificationModule(model))
    with saved_model_converter(module, module.signature()) as converter:
        if quantization != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            # Activation ranges measured by `calibration` (percentile-clipped), not the converter's min/max.
            # The offset is subtracted in float before the input is quantized (int8 / uint8 inputs are first
            # dequantized, exactly: their step is 1 / 128); the int8 subtraction was slower and, with int8 I/O,
            # less accurate (bench/README.md).
            float_scopes = (tflite_graph.INPUT_SCOPE, tflite_graph.CLIP_SCOPE, tflite_graph.SCORE_SCOPE)
            return tflite_flatbuffer.compact_tensor_names(calibration.quantize(
                converter, representative_dataset, IO_TYPES[io_type], IO_TYPES[io_type],
                input_range=tflite_input.INPUT_RANGE, float_scopes=float_scopes,
                float_outputs=detector and not raw_outputs))
        logging.info("converting %s to TFLite (%s) ...", model.name, quantization)
        return tflite_flatbuffer.compact_tensor_names(converter.convert())


@contextlib.contextmanager
def saved_model_converter(module: tf.Module, signature):
    """A `TFLiteConverter` of `module` saved with the concrete function `signature` as `serving_default`, valid
    inside the `with` (the SavedModel is a temporary directory the converter reads when it converts).

    From a SavedModel, as MG does: from_concrete_functions inlines the empty NMS function before the converter can
    see its `experimental_implements` attribute.

    The SavedModel has no gradient functions: a converter never uses them, and tracing those of the
    custom-gradient ops took ~40% of the save (30-35 s against 50-54 s for the fast test's Mobile-49XS, on a loaded
    2-core machine); loading it, TensorFlow's warning that it has none is dropped.
    """
    with tempfile.TemporaryDirectory(prefix="spinenet_tf_tflite_") as saved_model_dir, \
            _without_log_records(_NO_GRADIENTS_WARNING):
        tf.saved_model.save(module, saved_model_dir, signatures={"serving_default": signature},
                            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
        yield tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_default"])


# tensorflow/python/saved_model/function_deserialization.py, logged through absl for every function loaded.
_NO_GRADIENTS_WARNING = "with ops with unsaved custom gradients"


@contextlib.contextmanager
def _without_log_records(text: str):
    """Drops the absl log records whose message contains `text` inside the `with`."""
    def keep(record) -> bool:
        return text not in record.getMessage()

    logger = logging.get_absl_logger()
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)
