"""Edits of serialised TFLite flatbuffers through the object API of the TFLite schema: shorter tensor names
(`compact_tensor_names`) and packing a table back to bytes (`pack_flatbuffer`, also used for metadata tables)."""

from __future__ import annotations

import flatbuffers


def compact_tensor_names(content: bytes) -> bytes:
    """The .tflite with shorter tensor names; nothing else changes (weights, ops, signatures, I/O names).

    The converter names a fused op's output after every op it absorbed, joined by ';', each with the full Keras
    scope, and with our longer layer names that made our files larger than Model Garden's (sizes in
    bench/README.md). Each tensor keeps the first of those names without its outermost scope (the model's name), e.g.
    "spinenet_mobile_49xs_1/block15_resample1_1/down0_bn_1/FusedBatchNormV3"; graph inputs and outputs keep theirs.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(content, 0))
    for subgraph in model.subgraphs:
        keep = set(subgraph.inputs.tolist()) | set(subgraph.outputs.tolist())
        for index, tensor in enumerate(subgraph.tensors):
            if index in keep or not tensor.name:
                continue
            name = tensor.name.decode().split(";")[0]
            tensor.name = name.split("/", 1)[1] if "/" in name else name
    return pack_flatbuffer(model, b"TFL3")


def pack_flatbuffer(table, identifier: bytes) -> bytes:
    """Serialises a flatbuffer object-API table (a TFLite `ModelT`, a metadata table) with its file identifier."""
    builder = flatbuffers.Builder(0)
    builder.Finish(table.Pack(builder), identifier)
    return bytes(builder.Output())
