"""Running spinenet_tf .tflite files with the LiteRT interpreter (`ai_edge_litert`), by output name.

The converter keeps the SavedModel signature (`serving_default`), so outputs are read by the names the export gave
them (`detection_boxes`, `detection_classes`, `detection_scores`, `num_detections`; `raw_boxes`, `raw_scores`;
`logits`) whatever their tensor order (the interpreter's output list order is not the op's: a Model Garden export lists num_detections first).
Integer inputs and outputs (int8 classifiers) are quantized / dequantized here with the tensors' own scales.
"""

from __future__ import annotations

import os

import numpy as np

from spinenet_tf.data import detection_input
from spinenet_tf.detection import box_ops
from spinenet_tf.serving import tflite_input

DETECTION_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


class TFLiteModel:
    """One .tflite model and its interpreter.

    Args:
        model: Path to a .tflite file, or its bytes.
        num_threads: Interpreter threads (None: LiteRT's default).
        use_xnnpack: Apply the default XNNPACK delegate (False: the builtin kernels only).

    Example:
        model = TFLiteModel("detector.tflite", num_threads=2)
        outputs = model(normalised_image)          # {"detection_boxes": [1, K, 4], ...}
    """

    def __init__(self, model: str | bytes, num_threads: int | None = None, use_xnnpack: bool = True):
        self.interpreter, self.size_bytes = load_interpreter(model, num_threads, use_xnnpack)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self.input_name, = self.runner.get_input_details()
        self.input = self.runner.get_input_details()[self.input_name]
        self.outputs = self.runner.get_output_details()
        self.input_shape = tuple(int(d) for d in self.input["shape"])
        self.image_size = self.input_shape[1:3]

    @property
    def is_detector(self) -> bool:
        return "detection_boxes" in self.outputs or "raw_boxes" in self.outputs

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Runs one TFLite input (`tflite_input.to_tflite_input`: RGB in [-1, 1]) `[H, W, 3]` or `[1, H, W, 3]`.

        Raises:
            ValueError: One line giving the expected and the received shape.
        """
        image = np.asarray(image, np.float32)
        if image.ndim == 3:
            image = image[None]
        if image.shape != self.input_shape:
            raise ValueError(f"image of shape {list(image.shape)}: the model takes {list(self.input_shape)} "
                             f"(resize and pad to {self.image_size[0]}x{self.image_size[1]} first, e.g. "
                             "TFLiteModel.detect_image)")
        outputs = self.runner(**{self.input_name: _quantize(image, self.input)})
        return {name: _dequantize(value, self.outputs[name]) for name, value in outputs.items()}

    def detect_image(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """A detector on one uint8 RGB image of any size: resize + pad as in evaluation, run, and
        return `boxes` in original-image pixels [n, 4], `scores` [n], `classes` [n] (only the n valid rows)."""
        if "detection_boxes" not in self.outputs:
            raise ValueError("detect_image needs a detector with the NMS op (detection_* outputs)")
        inputs, info = detection_input.resize_and_pad(np.asarray(image), self.image_size)
        info = info.numpy()
        outputs = self(tflite_input.to_tflite_input(inputs))
        count = int(outputs["num_detections"][0])
        boxes = box_ops.to_original_pixels(ratio_to_pixels(outputs["detection_boxes"][0, :count], self.image_size),
                                           info)
        boxes = np.clip(boxes, 0.0, np.tile(info[0], 2))
        return {"boxes": boxes, "scores": outputs["detection_scores"][0, :count],
                "classes": outputs["detection_classes"][0, :count].astype(np.int32)}


def load_interpreter(model: str | bytes, num_threads: int | None = None,
                     use_xnnpack: bool = True) -> tuple[object, int]:
    """(A LiteRT `Interpreter` of a .tflite path or its bytes, the file size in bytes).

    LiteRT is imported here, not with the module, so that a command-line program without it (`pip install .` has
    no `litert` extra) ends in the one line that names the extra (`spinenet_tf.cli.run`), not a traceback.

    Raises:
        ValueError: One line: no such file, or not a loadable model.
        ModuleNotFoundError: ai_edge_litert is not installed.
    """
    from ai_edge_litert import interpreter as litert
    if isinstance(model, (str, os.PathLike)):
        if not os.path.isfile(model):
            raise ValueError(f"{model}: no such .tflite file")
        with open(model, "rb") as f:
            model = f.read()
    resolver = (litert.OpResolverType.AUTO if use_xnnpack
                else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    try:
        interpreter = litert.Interpreter(model_content=model, num_threads=num_threads,
                                         experimental_op_resolver_type=resolver)
    except ValueError as error:
        raise ValueError(f"not a loadable .tflite model: {str(error).splitlines()[0]}") from None
    return interpreter, len(model)


def ratio_to_pixels(boxes: np.ndarray, image_size) -> np.ndarray:
    """Boxes as fractions of the model input -> model-input pixels."""
    height, width = image_size
    return np.asarray(boxes, np.float32) * np.array([height, width, height, width], np.float32)


def _quantize(value: np.ndarray, details: dict) -> np.ndarray:
    dtype = np.dtype(details["dtype"])
    if dtype == np.float32:
        return value
    scale, zero_point = details["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(value / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(value: np.ndarray, details: dict) -> np.ndarray:
    if np.dtype(details["dtype"]) == np.float32:
        return value
    scale, zero_point = details["quantization"]
    return (value.astype(np.float32) - zero_point) * scale
