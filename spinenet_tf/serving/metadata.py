"""TFLite Model Metadata for MediaPipe Tasks `ObjectDetector` (and the older Task Library), written in Python.

The metadata is the `TFLITE_METADATA` buffer of the .tflite flatbuffer (schema `metadata_schema.fbs`, identifier
"M001") plus the label file appended to the model as a zip archive, which is how the official populator
(`mediapipe/tasks/python/metadata/metadata.py::MetadataPopulator`) stores associated files. What we write
mirrors `MetadataWriter.create_for_models_with_nms` in tflite-support's
`tensorflow_lite_support/metadata/python/metadata_writers/object_detector.py`:

- input `image`: ImageProperties RGB, NormalizationOptions mean 128 / std 128 (one value: MediaPipe rejects
  per-channel normalisation; the graph converts to ImageNet statistics, see `tflite_input.py`), stats min / max = the
  normalised range of 0..255;
- outputs named `location` (BoundingBoxProperties BOUNDARIES, RATIO, index (1, 0, 3, 2) for the op's ymin, xmin,
  ymax, xmax), `category` (label file as TENSOR_VALUE_LABELS), `score`, `number of detections`, the first three
  grouped as `detection_result`.

Why not the official writer: mediapipe 1.2.2 (in requirements-dev.txt) ships the writer, but it imports a compiled
module (`mediapipe.tasks.cc.metadata.python._pywrap_metadata_version`, only used to compute `min_parser_version`)
that the wheel lacks; mediapipe 0.10.21 has it but needs numpy < 2 and protobuf < 5. The pure-Python flatbuffer
classes the wheel does ship (`mediapipe.tasks.metadata.metadata_schema_py_generated`) and the `flatbuffers` package
are all that is needed; `min_parser_version` is set from the schema's version history (1.2.0 for tensor groups).
Model tensors are matched to roles through the NMS op's own outputs, not the writer's sort by tensor index.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

import numpy as np
from tensorflow.lite.python import schema_py_generated as tflite_schema

from spinenet_tf.serving import tflite_flatbuffer, tflite_graph, tflite_input

METADATA_NAME = "TFLITE_METADATA"
LABEL_FILE = "labels.txt"
OUTPUT_NAMES = ("location", "category", "score", "number of detections")  # the NMS op's output order
# Versions from metadata_schema.fbs's history: 1.0.0 for the base tables, 1.2.0 once output_tensor_groups is set.
_MIN_PARSER_VERSION = "1.2.0"


def _metadata_schema():
    try:
        from mediapipe.tasks.metadata import metadata_schema_py_generated
    except ImportError as error:
        raise ModuleNotFoundError(f'writing TFLite metadata needs mediapipe ({error}): pip install '
                                  f'"spinenet_tf[tflite]"', name="mediapipe") from None
    return metadata_schema_py_generated


def _flatbuffer(content: bytes) -> bytes:
    """The .tflite flatbuffer without associated files (a zip appended by an earlier populate)."""
    if not tflite_schema.Model.ModelBufferHasIdentifier(content, 0):
        raise ValueError("not a TFLite flatbuffer (identifier TFL3 missing)")
    if zipfile.is_zipfile(io.BytesIO(content)):
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            start = min(info.header_offset for info in archive.infolist())
        return content[:start]
    return content


def _detection_output_roles(model) -> list[int]:
    """For each subgraph output, its position among the NMS op's outputs (boxes, classes, scores, count)."""
    subgraph = model.Subgraphs(0)
    codes = [model.OperatorCodes(i).CustomCode() for i in range(model.OperatorCodesLength())]
    for i in range(subgraph.OperatorsLength()):
        operator = subgraph.Operators(i)
        code = codes[operator.OpcodeIndex()]
        if code is not None and code.decode() == tflite_graph.POSTPROCESS_OP:
            op_outputs = [int(t) for t in operator.OutputsAsNumpy()]
            break
    else:
        raise ValueError(f"the model has no {tflite_graph.POSTPROCESS_OP} op: detector metadata needs the NMS outputs "
                         "(export without raw outputs)")
    model_outputs = [int(t) for t in subgraph.OutputsAsNumpy()]
    # Boxes, classes and count are the op's own outputs; the scores may be computed from its output 2 (the op runs
    # on logits and the graph applies the sigmoid to the kept ones, `tflite_graph.SCORE_SCOPE`).
    derived = [t for t in model_outputs if t not in op_outputs]
    if (sorted(t for t in model_outputs if t in op_outputs) != sorted(op_outputs[:2] + op_outputs[3:]) or
            (derived and (len(derived) > 1 or op_outputs[2] not in _ancestors(subgraph, derived[0])))
            or (not derived and op_outputs[2] not in model_outputs)):
        raise ValueError(f"the model outputs {model_outputs} are not the {tflite_graph.POSTPROCESS_OP} outputs "
                         f"{op_outputs}")
    return [op_outputs.index(t) if t in op_outputs else 2 for t in model_outputs]


def _ancestors(subgraph, tensor: int) -> set[int]:
    """The tensors `tensor` is computed from in `subgraph`."""
    producers = {}
    for i in range(subgraph.OperatorsLength()):
        operator = subgraph.Operators(i)
        for output in operator.OutputsAsNumpy():
            producers[int(output)] = [int(t) for t in operator.InputsAsNumpy() if t >= 0]
    seen, todo = set(), [tensor]
    while todo:
        for parent in producers.get(todo.pop(), []):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _tensor(fb, name: str, description: str, content_type, properties, range_dim: bool = False):
    tensor = fb.TensorMetadataT()
    tensor.name = name
    tensor.description = description
    tensor.content = fb.ContentT()
    tensor.content.contentPropertiesType = content_type
    tensor.content.contentProperties = properties
    if range_dim:  # the per-box values run along dimension 2 of [1, K, ...] (the writer's ValueRange(2, 2))
        tensor.content.range = fb.ValueRangeT()
        tensor.content.range.min = tensor.content.range.max = 2
    tensor.stats = fb.StatsT()
    return tensor


def _input_image(fb, mean: Sequence[float], std: Sequence[float]):
    properties = fb.ImagePropertiesT()
    properties.colorSpace = fb.ColorSpaceType.RGB
    tensor = _tensor(fb, "image", "Input image to be detected, RGB, normalised as (pixel - mean) / std.",
                     fb.ContentProperties.ImageProperties, properties)
    normalization = fb.ProcessUnitT()
    normalization.optionsType = fb.ProcessUnitOptions.NormalizationOptions
    normalization.options = fb.NormalizationOptionsT()
    normalization.options.mean = [float(m) for m in mean]
    normalization.options.std = [float(s) for s in std]
    tensor.processUnits = [normalization]
    tensor.stats.min = [(0.0 - m) / s for m, s in zip(mean, std)]
    tensor.stats.max = [(255.0 - m) / s for m, s in zip(mean, std)]   # (the writer's InputImageTensorMd)
    return tensor


def _detection_outputs(fb) -> list:
    boxes = fb.BoundingBoxPropertiesT()
    boxes.index = [1, 0, 3, 2]  # the op writes ymin, xmin, ymax, xmax; BOUNDARIES order is left, top, right, bottom
    boxes.type = fb.BoundingBoxType.BOUNDARIES
    boxes.coordinateType = fb.CoordinateType.RATIO
    location = _tensor(fb, OUTPUT_NAMES[0], "The locations of the detected boxes.",
                       fb.ContentProperties.BoundingBoxProperties, boxes, range_dim=True)
    category = _tensor(fb, OUTPUT_NAMES[1], "The categories of the detected boxes.",
                       fb.ContentProperties.FeatureProperties, fb.FeaturePropertiesT(), range_dim=True)
    label_file = fb.AssociatedFileT()
    label_file.name = LABEL_FILE
    label_file.description = "Labels for categories that the model can recognize."
    label_file.type = fb.AssociatedFileType.TENSOR_VALUE_LABELS
    category.associatedFiles = [label_file]
    score = _tensor(fb, OUTPUT_NAMES[2], "The scores of the detected boxes.",
                    fb.ContentProperties.FeatureProperties, fb.FeaturePropertiesT(), range_dim=True)
    number = _tensor(fb, OUTPUT_NAMES[3], "The number of the detected boxes.",
                     fb.ContentProperties.FeatureProperties, fb.FeaturePropertiesT())
    return [location, category, score, number]


def detector_metadata(content: bytes, labels: Sequence[str], mean: Sequence[float] = (tflite_input.INPUT_MEAN,),
                      std: Sequence[float] = (tflite_input.INPUT_STD,), name: str = "ObjectDetector",
                      description: str = "") -> bytes:
    """The metadata flatbuffer ("M001") for a detector .tflite with the NMS op."""
    fb = _metadata_schema()
    model = tflite_schema.Model.GetRootAs(content, 0)
    if model.Subgraphs(0).InputsLength() != 1:
        raise ValueError(f"detector metadata needs one image input, the model has {model.Subgraphs(0).InputsLength()}")
    roles = _detection_output_roles(model)
    outputs = _detection_outputs(fb)
    subgraph = fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [_input_image(fb, mean, std)]
    subgraph.outputTensorMetadata = [outputs[role] for role in roles]
    group = fb.TensorGroupT()
    group.name = "detection_result"
    group.tensorNames = list(OUTPUT_NAMES[:3])
    subgraph.outputTensorGroups = [group]
    metadata = fb.ModelMetadataT()
    metadata.name = name
    metadata.description = description or (
        "SpineNet RetinaNet detector (spinenet_tf); boxes as fractions of the input, classes index the label file.")
    metadata.subgraphMetadata = [subgraph]
    metadata.minParserVersion = _MIN_PARSER_VERSION
    return tflite_flatbuffer.pack_flatbuffer(metadata, b"M001")


def populate(content: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """Puts `metadata` into the model's `TFLITE_METADATA` buffer and appends `files` as a zip archive (replacing
    metadata and files an earlier populate added), as `MetadataPopulator.populate` does."""
    flatbuffer = _flatbuffer(content)
    model = tflite_schema.ModelT.InitFromObj(tflite_schema.Model.GetRootAs(flatbuffer, 0))
    buffer = tflite_schema.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    model.metadata = model.metadata or []
    for entry in model.metadata:
        if entry.name.decode() == METADATA_NAME:
            model.buffers[entry.buffer] = buffer
            break
    else:
        model.buffers.append(buffer)
        entry = tflite_schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    packed = io.BytesIO(tflite_flatbuffer.pack_flatbuffer(model, b"TFL3"))
    packed.seek(0, io.SEEK_END)
    with zipfile.ZipFile(packed, "a") as archive:
        for file_name, data in files.items():
            archive.writestr(file_name, data)
    return packed.getvalue()


def add_detector_metadata(content: bytes, labels: Sequence[str], **kwargs) -> bytes:
    """A detector .tflite (with the NMS op) with metadata and label file embedded, ready for MediaPipe.

    Args:
        content: The .tflite bytes from `tflite_convert.convert`.
        labels: Names of the op's class indices 0..C-1 (one per line in the label file).
        **kwargs: mean, std (of the input normalisation), name, description.

    Raises:
        ValueError: The model has no NMS op, or its outputs are not the op's four outputs.
        ImportError: mediapipe (for its metadata schema) is not installed.
    """
    if not labels or any("\n" in label for label in labels):
        raise ValueError("labels: need at least one class name, none containing a newline")
    metadata = detector_metadata(content, labels, **kwargs)
    return populate(content, metadata, {LABEL_FILE: "\n".join(labels).encode()})


def read_metadata(content: bytes):
    """The `ModelMetadataT` of a .tflite, or None if it has none."""
    fb = _metadata_schema()
    model = tflite_schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name().decode() == METADATA_NAME:
            data = model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
            return fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAs(data, 0))
    return None


def read_associated_files(content: bytes) -> dict[str, bytes]:
    """The files appended to a .tflite ({} if none)."""
    if not zipfile.is_zipfile(io.BytesIO(content)):
        return {}
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}
