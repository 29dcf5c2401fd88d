"""Activation ranges for full-integer (int8) TFLite quantization, measured on the float graph.

The converter's own calibration (TF 2.20 `TFLiteConverter` with a `representative_dataset`) keeps, for every
activation tensor, the absolute min and max seen over all calibration images, and quantizes the tensor with one int8
step of (max - min) / 255. Two things go wrong with that on our detectors:

- **Outliers set the step.** A few extreme activations widen whole tensors' ranges, so more calibration data can
  make the int8 model *worse*, and many recorded ranges are far wider than any value the tensor takes when the
  same float graph runs with every tensor preserved.
- **Dead units break XNNPACK.** A squeeze-excitation ReLU that never fires (the 1-channel SE bottlenecks of
  SpineNet-Mobile's first blocks can die in training) gets the range `[0, 0]`; the conv writing it then needs a
  requantization multiplier (input scale x weight scale / output scale) above 256, which XNNPACK's int8 kernels do
  not accept, and LiteRT 2.3.0 / mediapipe 1.2.2 abort with "double free" (or "failed to create XNNPACK runtime").
  Likewise the level-7 box tower of a 128-pixel model carries values below 1e-6.

So `quantize` runs the converter's calibration only for the graph (`_experimental_calibrate_only`, the route
`tf.lite.experimental.QuantizationDebugger` takes), then measures the ranges itself: it runs that float graph
with LiteRT on the calibration images, histograms each activation tensor over all of them (`NUM_BINS` bins) and
takes the `PERCENTILES` (0.001, 99.999) — the defaults of TensorFlow's own histogram-percentile calibration
(`tensorflow/compiler/mlir/quantization/tensorflow/calibrator/calibration_algorithm.py`, `HistogramPercentile`) —
widened to contain 0 and to span at least `MIN_RANGE`; model inputs keep their full range (or a given one). The
ranges are written into the calibrated flatbuffer and the converter's quantizer (`mlir_quantize`) does the rest,
as in a plain conversion (which this reproduces output for output when the ranges are left unchanged). With
these ranges the int8 model is closer to the float one and runs under XNNPACK (measurements: bench/README.md,
"int8 calibration ranges").

This uses TF-internal entry points (`_experimental_calibrate_only`, `lite.python.convert.mlir_quantize`), as the
QuantizationDebugger does; requirements pin TF 2.20 and the tests convert through this path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from absl import logging

PERCENTILES = (0.001, 99.999)
NUM_BINS = 2048
# Activations here are batch-normalised, O(1). A tensor whose calibration values span less than this carries no
# signal (the dead ReLUs above give exactly 0, the level-7 tower 1e-8 - 1e-6) and its int8 step would be tiny
# enough to push requantization multipliers past what XNNPACK accepts.
MIN_RANGE = 1e-3


def _calibrated_tensors(model) -> list[int]:
    """Indices of the tensors of subgraph 0 that carry calibration min/max (the quantizer's activations)."""
    tensors = model.subgraphs[0].tensors
    return [i for i, t in enumerate(tensors)
            if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min)]


def activation_ranges(calibrated: bytes, representative_dataset: Callable[[], Iterable[list[np.ndarray]]],
                      percentiles: tuple[float, float] = PERCENTILES, num_bins: int = NUM_BINS,
                      min_range: float = MIN_RANGE,
                      input_range: tuple[float, float] | None = None) -> dict[int, tuple[float, float]]:
    """Per-tensor (min, max) of a calibrated float .tflite over `images`, as the module docstring says.

    Args:
        calibrated: The converter's output with `_experimental_calibrate_only` (float graph, min/max attached).
        representative_dataset: The converter's: a callable returning an iterable of `[image]`, image `[1, H, W, C]`
            float32 (called twice).
        percentiles: Lower and upper percentile of each tensor's values over all images.
        num_bins: Histogram bins between a tensor's overall min and max.
        min_range: Narrowest range written.
        input_range: The model input's range when it is known by construction (e.g. the TFLite values of pixels 0
            and 255); else the input keeps the full range of the calibration images.

    Returns:
        {tensor index: (min, max)} for every calibrated tensor.
    """
    from ai_edge_litert import interpreter as litert
    from tensorflow.lite.tools import flatbuffer_utils

    indices = _calibrated_tensors(flatbuffer_utils.convert_bytearray_to_object(calibrated))
    # Every tensor kept: no buffer reuse between tensors, so each read is that tensor's own value.
    interpreter = litert.Interpreter(
        model_content=calibrated, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    inputs = [d["index"] for d in interpreter.get_input_details()]

    def values_per_image():
        for image, in representative_dataset():
            interpreter.set_tensor(inputs[0], np.asarray(image, np.float32))
            interpreter.invoke()
            yield {i: interpreter.get_tensor(i) for i in indices}

    low = {i: np.inf for i in indices}
    high = {i: -np.inf for i in indices}
    num_images = 0
    for values in values_per_image():
        num_images += 1
        for i, value in values.items():
            low[i], high[i] = min(low[i], float(value.min())), max(high[i], float(value.max()))
    if not np.isfinite(list(low.values())).all():
        raise ValueError("no calibration images")
    logging.info("int8: histograms of %d activation tensors over %d calibration images ...", len(indices), num_images)
    # Inputs keep their full range (pixels have no outliers); ranges already narrower than min_range get widened.
    clipped = [i for i in indices if i not in inputs and high[i] - low[i] >= min_range]
    counts = {i: np.zeros(num_bins, np.int64) for i in clipped}
    for values in values_per_image():
        for i in clipped:
            counts[i] += np.histogram(values[i], num_bins, (low[i], high[i]))[0]
    ranges = {}
    for i in indices:
        lo, hi = _percentile_range(counts[i], low[i], high[i], percentiles) if i in counts else (low[i], high[i])
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        ranges[i] = (lo, max(hi, lo + min_range))
    if input_range is not None:
        ranges.update({i: tuple(map(float, input_range)) for i in inputs if i in ranges})
    return ranges


def _percentile_range(counts: np.ndarray, low: float, high: float,
                      percentiles: tuple[float, float]) -> tuple[float, float]:
    """The outer edges of the histogram bins holding the lower and upper percentile."""
    edges = np.linspace(low, high, len(counts) + 1)
    cumulative = np.cumsum(counts) / counts.sum()
    first = int(np.searchsorted(cumulative, percentiles[0] / 100.0, side="right"))
    last = int(np.searchsorted(cumulative, percentiles[1] / 100.0, side="left"))
    return float(edges[min(first, len(counts) - 1)]), float(edges[min(last, len(counts) - 1) + 1])


def with_ranges(calibrated: bytes, ranges: dict[int, tuple[float, float]]) -> bytes:
    """The calibrated flatbuffer with the given per-tensor (min, max) in place of the calibrator's."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    tensors = model.subgraphs[0].tensors
    for i, (lo, hi) in ranges.items():
        tensors[i].quantization.min = np.array([lo], np.float32)
        tensors[i].quantization.max = np.array([hi], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def quantize(converter, representative_dataset: Callable[[], Iterable[list[np.ndarray]]], input_type,
             output_type, input_range: tuple[float, float] | None = None,
             float_scopes: Iterable[str] = (), float_outputs: bool = False) -> bytes:
    """Full-integer quantization of a configured `tf.lite.TFLiteConverter` with the ranges of this module.

    Args:
        converter: With `optimizations`, `target_spec.supported_ops` set for int8 (not yet converted).
        representative_dataset: Callable returning an iterable of `[image]` model inputs (called three times).
        input_type, output_type: tf dtypes of the quantized model's input and output (float32, int8 or uint8).
        input_range: See `activation_ranges`.
        float_scopes: Ops whose output tensor names contain one of these stay float32 (the quantizer's
            `denylisted_nodes`).
        float_outputs: The ops that produce the model's outputs stay float32 too (their tensors are named after
            the signature's outputs, not the scopes they were built in).

    Returns:
        The .tflite bytes.
    """
    from tensorflow.lite.python import convert as lite_convert
    from tensorflow.lite.tools import flatbuffer_utils

    converter.representative_dataset = representative_dataset
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    logging.info("int8: converting the float graph with the converter's calibration ...")
    calibrated = converter.convert()
    logging.info("int8: measuring activation ranges on the calibration images ...")
    ranges = activation_ranges(calibrated, representative_dataset, input_range=input_range)
    scopes = tuple(float_scopes)
    subgraph = flatbuffer_utils.convert_bytearray_to_object(calibrated).subgraphs[0]
    names = [t.name.decode() for t in subgraph.tensors]
    float_nodes = [name for name in names if any(scope in name for scope in scopes)]
    if float_outputs:
        float_nodes += [names[index] for index in subgraph.outputs]
    logging.info("int8: quantizing with %d measured ranges (%d tensors kept float) ...", len(ranges), len(float_nodes))
    quantized = lite_convert.mlir_quantize(with_ranges(calibrated, ranges), input_data_type=input_type,
                                           output_data_type=output_type, denylisted_nodes=float_nodes or None)
    return lite_convert.deduplicate_readonly_buffers(quantized)
