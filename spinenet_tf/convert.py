"""Model Garden -> spinenet_tf weight conversion.

Loads Google's TF2 Model Garden (tf-models-official, `official/vision/modeling/backbones/spinenet.py`,
`spinenet_mobile.py` and `resnet.py`) SpineNet and ResNet weights into our Keras 3 models, from a live Model Garden
model (`from_model_garden`) or from a checkpoint file written by Model Garden training (`load_model_garden_checkpoint`).
Model Garden is not imported here: a checkpoint is read with `tf.train.load_checkpoint` and its object graph.

How layers are matched. Model Garden builds its backbone as an auto-named `tf_keras` functional model: every
top-level layer is named `<type>_<n>`, where n counts the layers of that type in creation order (`conv2d`,
`conv2d_1`, ...; `bottleneck_block_3`, ...). A checkpoint keeps that name as each variable's `full_name`, and the
attribute path inside a block (`_conv1/kernel`) in its key. Our network creates the same layers in the same program
order, so the k-th Model Garden layer of a type is our k-th layer of that type, with blocks mapped attribute by
attribute (`_BLOCK_ATTRIBUTES`). Every count and shape is checked; a checkpoint of another model or config fails
with a one-line error instead of loading silently wrong weights.

RetinaNet (`official/vision/modeling/retinanet_model.py`) checkpoints hold the backbone under `.../_backbone` and the
head (`heads/dense_prediction_heads.py::RetinaNetHead`, a plain layer) under `.../_head`, whose attribute paths
(`_cls_convs/<i>`, `_cls_norms/<level index>/<i>`, `_classifier`, and the box twins) map by `_HEAD_PATHS`. A ResNet
RetinaNet also holds its FPN (`decoders/fpn.py`, a functional model whose layers MG names itself: `lateral_L`,
`post_hoc_L`, `coarser_L`, `norm_L`) under `.../_decoder`; they map by name onto our `FPN` (`_FPN_LAYERS`). MG's ResNet
is auto-named like its SpineNet: the stem's `conv2d` and `batch_normalization`, then one `bottleneck_block` (or
`residual_block`) per block, in our functional model's layer order.

Mask R-CNN (`official/vision/modeling/maskrcnn_model.py`) checkpoints hold the backbone under `.../backbone` and three
plain-layer heads found by name: `rpn_head`, `detection_head` (a list, stored as `detection_head` or
`detection_head/0`, sometimes under `_config_dict`) and `mask_head`; their attributes map by `_MASKRCNN_HEADS`
(`_norms/<level index>/<i>` -> `norms[level index][i]`, and so on).

A classification model (`official/vision/modeling/classification_model.py`, itself a functional model) holds its
backbone as a nested functional model (`model/layer_with_weights-0/...`); its head differs from ours (top level only,
see `spinenet_tf.classification.head`), so only its backbone loads. Fine-tuning to another class count
(`num_classes_may_differ`) leaves the class-prediction layers (`class_prediction_layers`) as initialised.

Names that differ from Model Garden: `stochastic_depth_rate` is MG's `init_stochastic_depth_rate`; endpoints are
keyed by int level instead of str.
"""

from __future__ import annotations

import collections
import os
import re
import tempfile

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from spinenet_tf.backbones.resnet import ResNet
from spinenet_tf.backbones.spinenet import SpineNet, SpineNetMobile, block_name
from spinenet_tf.classification.classifier import Classifier
from spinenet_tf.detection.fpn import FPN
from spinenet_tf.detection.maskrcnn.model import MaskRCNN
from spinenet_tf.detection.retinanet import RetinaNet
from spinenet_tf.layers.blocks import BottleneckBlock, ResidualBlock

# Model Garden block attribute -> our sub-layer, per Model Garden block type (nn_blocks.py).
_BLOCK_ATTRIBUTES = {
    "bottleneck_block": {"_shortcut": "shortcut_conv", "_norm0": "shortcut_bn", "_conv1": "conv1",
                         "_norm1": "bn1", "_conv2": "conv2", "_norm2": "bn2", "_conv3": "conv3", "_norm3": "bn3"},
    "residual_block": {"_shortcut": "shortcut_conv", "_norm0": "shortcut_bn", "_conv1": "conv1", "_norm1": "bn1",
                       "_conv2": "conv2", "_norm2": "bn2"},
    "inverted_bottleneck_block": {"_conv0": "expand_conv", "_norm0": "expand_bn", "_conv1": "depthwise_conv",
                                  "_norm1": "depthwise_bn", "_squeeze_excitation/_se_reduce": "se/reduce",
                                  "_squeeze_excitation/_se_expand": "se/expand", "_conv2": "project_conv",
                                  "_norm2": "project_bn"},
}
# Model Garden RetinaNetHead attribute path -> our head's sublayer path (see `_sublayer`).
_HEAD_PATHS = (
    (re.compile(r"^_(cls|box)_convs/(\d+)$"), lambda net, i: f"{_NET[net]}_convs/{i}"),
    (re.compile(r"^_(cls|box)_norms/(\d+)/(\d+)$"), lambda net, level, i: f"{_NET[net]}_norms/{level}/{i}"),
    (re.compile(r"^_(classifier|box_regressor)$"),
     lambda name: {"classifier": "class_predictor", "box_regressor": "box_predictor"}[name]),
)
_NET = {"cls": "class", "box": "box"}
# Model Garden Mask R-CNN head -> (our head attribute on MaskRCNN, {MG attribute: our attribute}); indices after an
# attribute (`_norms/2/0`) index our list the same way.
_MASKRCNN_HEADS = {
    "rpn_head": ("rpn_head", {"_convs": "convs", "_norms": "norms", "_classifier": "score_predictor",
                              "_box_regressor": "box_predictor"}),
    "detection_head": ("detection_head", {"_convs": "convs", "_conv_norms": "conv_norms", "_fcs": "fcs",
                                          "_fc_norms": "fc_norms", "_classifier": "class_predictor",
                                          "_box_regressor": "box_predictor"}),
    "mask_head": ("mask_head", {"_convs": "convs", "_conv_norms": "conv_norms", "_deconv": "deconv",
                                "_deconv_bn": "deconv_norm", "_mask_regressor": "mask_predictor"}),
}
_MASKRCNN_HEAD_KEY = re.compile(r"^(?:.*/)?(?P<head>rpn_head|detection_head|mask_head)(?:/0)?/"
                                r"(?P<leaf>_[a-z_]+(?:/\d+)*)/(?P<variable>[^/]+)/\.ATTRIBUTES/VARIABLE_VALUE$")
_BLOCK_TYPE = {"bottleneck": "bottleneck_block", "residual": "residual_block", "mbconv": "inverted_bottleneck_block"}
# Model Garden FPN layer `<kind>_<level>` -> the dict of our `FPN` holding that level's layer.
_FPN_LAYER = re.compile(r"^(?P<kind>lateral|post_hoc|coarser|norm)_(?P<level>\d+)$")
_FPN_LAYERS = {"lateral": "laterals", "post_hoc": "post_hoc", "coarser": "coarser", "norm": "norms"}
# Model Garden variable name -> ours where ours differs (Keras 3 names a DepthwiseConv2D kernel "kernel", while
# its SeparableConv2D keeps "depthwise_kernel").
_VARIABLE_NAMES = {"depthwise_kernel": "kernel"}
# The innermost functional model's layer: a classification model's backbone is `model/layer_with_weights-0/`, its
# layers `model/layer_with_weights-0/layer_with_weights-<i>/...`.
_KEY = re.compile(r"^(?P<prefix>.*?)/?layer_with_weights-(?P<index>\d+)/(?P<path>(?!.*layer_with_weights-).+)"
                  r"/\.ATTRIBUTES/VARIABLE_VALUE$")
_LAYER_NAME = re.compile(r"^(?P<type>[a-z][a-z0-9_]*?)(?:_(?P<n>\d+))?$")


class HeadlessCheckpointError(ValueError):
    """The checkpoint has no weights for the model's heads (a backbone-only or classification model's checkpoint, or
    another detector's): only its backbone can load, into `model.backbone`. `problem` is the message without that
    advice."""

    def __init__(self, problem: str):
        super().__init__(f"{problem}; load its backbone alone, into `model.backbone`")
        self.problem = problem


def _leaf_type(layer: keras.layers.Layer) -> str:
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "depthwise_conv2d"
    if isinstance(layer, keras.layers.Conv2D):
        return "conv2d"
    if isinstance(layer, keras.layers.BatchNormalization):
        return "batch_normalization"
    return ""


def _resnet_block_type(layer: keras.layers.Layer) -> str:
    if isinstance(layer, BottleneckBlock):
        return "bottleneck_block"
    if isinstance(layer, ResidualBlock):
        return "residual_block"
    return ""


def backbone_layers_in_model_garden_order(backbone: SpineNet | ResNet) -> list[tuple[str, keras.layers.Layer]]:
    """Our layers that stand for Model Garden's top-level weighted layers, as (MG type, layer), in MG's order."""
    if isinstance(backbone, ResNet):  # stem conv and batch norm, then the blocks: MG's order is our layer order
        return [(_leaf_type(layer) or _resnet_block_type(layer), layer) for layer in backbone.layers
                if _leaf_type(layer) or _resnet_block_type(layer)]
    order: list[tuple[str, keras.layers.Layer]] = []

    def leaves(layers):
        order.extend((_leaf_type(layer), layer) for layer in layers if _leaf_type(layer))

    def group(node):
        name = block_name(node)
        names = [name] + [f"{name}_r{r}" for r in range(2, backbone.block_repeats + 1)]
        order.extend((_BLOCK_TYPE[node.block_fn], backbone.get_layer(n)) for n in names)

    leaves([backbone.get_layer("stem_conv"), backbone.get_layer("stem_bn")])
    for node in backbone.plan:
        if node.used and not node.inputs:  # stem blocks
            group(node)
    for node in backbone.plan:
        if node.used and node.inputs:
            for k in range(len(node.inputs)):
                leaves(backbone.get_layer(f"block{node.index:02d}_resample{k}").chain)
            group(node)
    for level in range(backbone.min_level, backbone.max_level + 1):
        leaves([backbone.get_layer(f"endpoint_l{level}_conv"), backbone.get_layer(f"endpoint_l{level}_bn")])
    return order


def _is_block(layer_name: str) -> bool:
    match = _LAYER_NAME.match(layer_name)
    return bool(match) and match["type"] in _BLOCK_TYPE.values()


def _read_object_graph(reader) -> dict[str, str]:
    """checkpoint key -> variable full_name, for every model variable (no optimizer slots)."""
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return {attribute.checkpoint_key: attribute.full_name for node in graph.nodes for attribute in node.attributes
            if attribute.name == "VARIABLE_VALUE" and ".OPTIMIZER_SLOT" not in attribute.checkpoint_key}


def _model_garden_layers(path: str, prefix: str | None):
    """Groups a checkpoint's functional-model variables by layer: {type: [(n, {attribute path: key})]}, sorted."""
    reader = tf.train.load_checkpoint(path)
    full_names = _read_object_graph(reader)
    by_prefix: dict[str, dict[int, dict[str, str]]] = collections.defaultdict(lambda: collections.defaultdict(dict))
    layer_names: dict[tuple[str, int], str] = {}
    for key, full_name in full_names.items():
        match = _KEY.match(key)
        if match:
            index = int(match["index"])
            by_prefix[match["prefix"]][index][match["path"]] = key
            layer_names[(match["prefix"], index)] = full_name.split("/")[0]
    if prefix is None:
        candidates = sorted(by_prefix)
        if not candidates:
            raise ValueError(f"{path}: holds no Model Garden backbone (no tf_keras functional model)")
        named = [p for p in candidates if p.split("/")[-1] in ("backbone", "_backbone")]
        # A SpineNet has blocks; a classification model's own layers (around its nested backbone) have none.
        with_blocks = [p for p in candidates if any(_is_block(name) for (q, _), name in layer_names.items() if q == p)]
        for found in ([candidates] if len(candidates) == 1 else []) + [named, with_blocks]:
            if len(found) == 1:
                prefix = found[0]
                break
        else:
            raise ValueError(f"{path}: cannot tell which functional model is the backbone among {candidates}; "
                             f"pass prefix=")
    if prefix not in by_prefix:
        raise ValueError(f"{path}: no Model Garden functional model under {prefix!r}; found {sorted(by_prefix)}")
    layers = collections.defaultdict(list)
    for index, attributes in by_prefix[prefix].items():
        match = _LAYER_NAME.match(layer_names[(prefix, index)])
        if not match:
            raise ValueError(f"{path}: layer {layer_names[(prefix, index)]!r} is not an auto-named Model Garden layer")
        layers[match["type"]].append((int(match["n"] or 0), attributes))
    return reader, full_names, prefix, {layer_type: [attrs for _, attrs in sorted(entries, key=lambda e: e[0])]
                                        for layer_type, entries in layers.items()}


def _assign(our_layer: keras.layers.Layer, values: dict[str, np.ndarray], where: str,
            may_skip: bool = False) -> int:
    """Assigns {MG variable name: value} to our layer's variables by name; returns the number assigned.

    With `may_skip` (a class-prediction layer fine-tuned to another class count), a layer whose shapes differ is
    left as it is (0 assigned) instead of raising.
    """
    ours = {variable.name: variable for variable in our_layer.weights}
    if len(ours) != len(values):
        raise ValueError(f"{where}: Model Garden has {sorted(values)}, ours {our_layer.name} has {sorted(ours)}")
    pairs = []
    for mg_name, value in values.items():
        variable = ours.get(mg_name if mg_name in ours else _VARIABLE_NAMES.get(mg_name, mg_name))
        if variable is None:
            raise ValueError(f"{where}: no variable {mg_name!r} in our layer {our_layer.name}")
        pairs.append((variable, value))
    for variable, value in pairs:
        if tuple(variable.shape) != tuple(value.shape):
            if may_skip:
                return 0
            raise ValueError(f"{where}: shape {tuple(value.shape)} does not fit {our_layer.name}/{variable.name} "
                             f"{tuple(variable.shape)}: the checkpoint is for another model or config")
    for variable, value in pairs:
        variable.assign(value)
    return len(values)


def _sublayer(layer: keras.layers.Layer, path: str) -> keras.layers.Layer:
    """Follows a "/"-separated path from `layer`: a number indexes a list, anything else names an attribute
    (`se/reduce` -> `layer.se.reduce`, `norms/2/0` -> `layer.norms[2][0]`). Raises IndexError past a list's end."""
    for part in path.split("/"):
        layer = layer[int(part)] if part.isdigit() else getattr(layer, part)
    return layer


def class_prediction_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of `model` whose shapes depend on its class count: RetinaNet's class predictor; Mask R-CNN's
    class, (class-specific) box and mask predictors; a classifier's logits layer. A backbone has none."""
    if isinstance(model, RetinaNet):
        return [model.head.class_predictor]
    if isinstance(model, MaskRCNN):
        return [model.detection_head.class_predictor, model.detection_head.box_predictor,
                model.mask_head.mask_predictor]
    if isinstance(model, Classifier):
        return [model.head.dense]
    return []


def _load_head(reader, full_names: dict[str, str], prefix: str, head, path: str, skippable=()) -> int:
    """Loads a Model Garden RetinaNetHead stored under `prefix` into our `RetinaNetHead`; layers in `skippable` are
    left as they are when their shapes differ (another class count)."""
    groups = collections.defaultdict(dict)
    for key in full_names:
        if key.startswith(prefix + "/"):
            leaf, _, variable = key[len(prefix) + 1:].removesuffix("/.ATTRIBUTES/VARIABLE_VALUE").rpartition("/")
            groups[leaf][variable] = reader.get_tensor(key)
    if not groups:
        raise ValueError(f"{path}: no RetinaNet head under {prefix!r}")
    loaded = skipped = 0
    for leaf, values in sorted(groups.items()):
        for pattern, target in _HEAD_PATHS:
            match = pattern.match(leaf)
            if match:
                try:
                    layer = _sublayer(head, target(*match.groups()))
                except IndexError:
                    raise ValueError(f"{path}: head layer {leaf!r} has no counterpart in ours (num_convs "
                                     f"{head.num_convs}, levels {head.min_level}..{head.max_level})") from None
                count = _assign(layer, values, f"{path}: head {leaf}", may_skip=any(layer is s for s in skippable))
                skipped += 0 if count else len(layer.weights)
                loaded += count
                break
        else:
            raise ValueError(f"{path}: unexpected Model Garden head layer {leaf!r}")
    if loaded + skipped != len(head.weights):
        raise ValueError(f"{path}: the checkpoint's head holds {loaded} variables, ours {len(head.weights)}")
    return loaded


def _load_fpn(reader, full_names: dict[str, str], prefix: str, fpn: FPN, path: str) -> int:
    """Loads a Model Garden FPN (a functional model stored under `prefix`) into our `FPN`, layer by MG's name."""
    groups = collections.defaultdict(dict)  # MG layer name -> {variable name: value}
    for key, full_name in full_names.items():
        match = _KEY.match(key)
        if match and match["prefix"] == prefix:
            groups[full_name.split("/")[0]][match["path"]] = reader.get_tensor(key)
    loaded = 0
    for name, values in sorted(groups.items()):
        match = _FPN_LAYER.match(name)
        if not match:
            raise ValueError(f"{path}: unexpected Model Garden FPN layer {name!r}")
        layer = getattr(fpn, _FPN_LAYERS[match["kind"]]).get(int(match["level"]))
        if layer is None:
            raise ValueError(f"{path}: FPN layer {name!r} has no counterpart in ours (levels {fpn.min_level}.."
                             f"{fpn.max_level}, backbone levels up to {fpn.top_level})")
        loaded += _assign(layer, values, f"{path}: FPN {name}")
    if loaded != len(fpn.weights):
        raise ValueError(f"{path}: the checkpoint's FPN holds {loaded} variables, ours {len(fpn.weights)}")
    return loaded


def _load_maskrcnn_heads(reader, full_names: dict[str, str], model: MaskRCNN, path: str,
                         skippable=()) -> int:
    """Loads Model Garden's Mask R-CNN RPN, detection and mask heads into ours (see `_MASKRCNN_HEADS`); layers in
    `skippable` are left as they are when their shapes differ (another class count)."""
    groups = collections.defaultdict(dict)  # (head, leaf) -> {variable: value}
    for key in full_names:
        match = _MASKRCNN_HEAD_KEY.match(key)
        if match:
            groups[(match["head"], match["leaf"])][match["variable"]] = reader.get_tensor(key)
    loaded = 0
    for head_name, (attribute, mapping) in _MASKRCNN_HEADS.items():
        head = getattr(model, attribute)
        leaves = {leaf: values for (name, leaf), values in groups.items() if name == head_name}
        if not leaves:
            raise ValueError(f"{path}: no Mask R-CNN {head_name} in the checkpoint")
        head_loaded = head_skipped = 0
        for leaf, values in sorted(leaves.items()):
            mg_attribute, *indices = leaf.split("/")
            if mg_attribute not in mapping:
                raise ValueError(f"{path}: unexpected Model Garden {head_name} layer {leaf!r}")
            try:
                layer = _sublayer(head, "/".join([mapping[mg_attribute], *indices]))
            except IndexError:
                raise ValueError(f"{path}: {head_name} layer {leaf!r} has no counterpart in ours: the checkpoint is "
                                 f"for other head settings (convs, levels)") from None
            count = _assign(layer, values, f"{path}: {head_name} {leaf}", may_skip=any(layer is s for s in skippable))
            head_skipped += 0 if count else len(layer.weights)
            head_loaded += count
        if head_loaded + head_skipped != len(head.weights):
            raise ValueError(f"{path}: the checkpoint's {head_name} holds {head_loaded} variables, ours "
                             f"{len(head.weights)}: it is for other head settings")
        loaded += head_loaded
    return loaded


def load_model_garden_checkpoint(path: str, model: SpineNet | ResNet | RetinaNet | MaskRCNN,
                                 prefix: str | None = None, num_classes_may_differ: bool = False) -> int:
    """Loads a Model Garden checkpoint into our backbone, our RetinaNet (backbone, FPN decoder if it has one, and
    head) or our Mask R-CNN (backbone, RPN, detection and mask heads).

    Args:
        path: A checkpoint prefix (e.g. `.../ckpt-231000`) or a directory holding one.
        model: Ours, built with the same settings (name, filter scale, repeats, levels; for RetinaNet also
            num_classes, head convs and filters, anchors per location) as the checkpoint's.
        prefix: Object path of the backbone inside the checkpoint (e.g. "model/_backbone"); found when None. The
            RetinaNet head is read from its sibling `_head` (or `head`), an FPN from its sibling `_decoder`.
        num_classes_may_differ: Fine-tuning to another class count: the `class_prediction_layers` whose shapes
            differ from the checkpoint's are left as initialised (Model Garden's `init_checkpoint_modules="all"`
            would refuse them), and every other weight must still fit.

    Returns:
        The number of variables loaded (batch-norm moving statistics included); a class-prediction layer left as
        initialised counts none.

    Raises:
        HeadlessCheckpointError: (a ValueError) The checkpoint has no weights for the heads of `model` (a backbone
            or classification model's checkpoint into a detector, a Mask R-CNN's into a RetinaNet, any into a
            classifier).
        ValueError: If the file is missing or not a checkpoint, or its layers do not fit `backbone` (one line
            naming the first mismatch).
    """
    if isinstance(model, Classifier):
        raise HeadlessCheckpointError(f"{path}: a Model Garden checkpoint cannot fill our classifier's head (Model "
                                      f"Garden's classification head is another)")
    backbone = model.backbone if isinstance(model, (RetinaNet, MaskRCNN)) else model
    skippable = tuple(class_prediction_layers(model)) if num_classes_may_differ else ()
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise ValueError(f"{path}: no checkpoint in this directory")
        path = latest
    try:
        reader, full_names, prefix, mg_layers = _model_garden_layers(path, prefix)
    except tf.errors.OpError as error:
        raise ValueError(f"{path}: not a readable TensorFlow checkpoint ({error.message.splitlines()[0]})") from None
    head_prefix, decoder_prefix = _check_heads(path, full_names, prefix, model)
    ours_by_type = collections.defaultdict(list)
    for layer_type, layer in backbone_layers_in_model_garden_order(backbone):
        ours_by_type[layer_type].append(layer)
    for layer_type in sorted(set(ours_by_type) | set(mg_layers)):
        have, want = len(mg_layers.get(layer_type, [])), len(ours_by_type.get(layer_type, []))
        if have != want:
            raise ValueError(f"{path}: has {have} {layer_type} layers where {backbone.name} has {want}: the checkpoint "
                             f"is for another model or config")
    loaded = 0
    for layer_type, our_layers in ours_by_type.items():
        for k, (our_layer, attributes) in enumerate(zip(our_layers, mg_layers[layer_type])):
            where = f"{path}: {layer_type} #{k}"
            groups = collections.defaultdict(dict)  # MG attribute path of a leaf -> {variable name: value}
            for attribute_path, key in attributes.items():
                leaf, _, variable = attribute_path.rpartition("/")
                groups[leaf][variable] = reader.get_tensor(key)
            for leaf, values in groups.items():
                if leaf:
                    mapping = _BLOCK_ATTRIBUTES[layer_type]
                    if leaf not in mapping:
                        raise ValueError(f"{where}: unexpected Model Garden sub-layer {leaf!r}")
                    target = _sublayer(our_layer, mapping[leaf])
                else:
                    target = our_layer
                loaded += _assign(target, values, f"{where} {leaf}".rstrip())
    expected = sum(len(layer.weights) for _, layer in backbone_layers_in_model_garden_order(backbone))
    if loaded != expected:
        raise ValueError(f"{path}: loaded {loaded} variables but {backbone.name} has {expected} in matched layers")
    if isinstance(model, RetinaNet):
        if model.decoder is not None:
            loaded += _load_fpn(reader, full_names, decoder_prefix, model.decoder, path)
        loaded += _load_head(reader, full_names, head_prefix, model.head, path, skippable)
    if isinstance(model, MaskRCNN):
        loaded += _load_maskrcnn_heads(reader, full_names, model, path, skippable)
    return loaded


def _check_heads(path: str, full_names: dict[str, str], prefix: str, model) -> tuple[str | None, str | None]:
    """Before anything loads: the checkpoint has the heads `model` needs (else HeadlessCheckpointError), and an FPN
    decoder exactly when `model` has one (else ValueError); returns the prefixes of a RetinaNet's head and decoder."""
    maskrcnn = any(_MASKRCNN_HEAD_KEY.match(key) for key in full_names)
    if isinstance(model, RetinaNet):
        parent = prefix.rpartition("/")[0]

        def sibling(*names):
            found = [p.lstrip("/") for p in (f"{parent}/{name}" for name in names)
                     if any(k.startswith(p.lstrip("/") + "/") for k in full_names)]
            return found[0] if found else None

        head, decoder = sibling("_head", "head"), sibling("_decoder", "decoder")
        if head and (decoder is None) != (model.decoder is None):
            has = f"no FPN decoder beside {prefix!r}" if decoder is None else f"an FPN decoder {decoder!r}"
            ours = "has one" if model.decoder is not None else "has none"
            raise ValueError(f"{path}: the checkpoint has {has}, {model.name} {ours}: the checkpoint is for another "
                             f"model")
        if head:
            return head, decoder
        if maskrcnn:
            raise HeadlessCheckpointError(f"{path}: a Mask R-CNN checkpoint (RPN, box and mask heads) cannot fill a "
                                          f"RetinaNet's head")
        raise HeadlessCheckpointError(f"{path}: no RetinaNet head beside the backbone {prefix!r}: a backbone-only "
                                      f"checkpoint cannot fill a detector's head")
    if isinstance(model, MaskRCNN) and not maskrcnn:
        raise HeadlessCheckpointError(f"{path}: no Mask R-CNN heads (RPN, box, mask) beside the backbone {prefix!r}")
    return None, None


def from_model_garden(mg_model, model: SpineNet | ResNet | RetinaNet | MaskRCNN) -> int:
    """Copies every weight (batch-norm statistics included) of a live Model Garden model into ours.

    Args:
        mg_model: A built `official.vision.modeling.backbones.SpineNet` / `SpineNetMobile` / `ResNet`, or a built
            `official.vision.modeling.retinanet_model.RetinaNetModel` (on a SpineNet, or on a ResNet with an FPN
            decoder) / `maskrcnn_model.MaskRCNNModel` on one (tf_keras), its heads built.
        model: Ours, built with the same settings: a backbone for a backbone, a `RetinaNet` / `MaskRCNN` for those.

    Returns:
        The number of variables copied.
    """
    if not isinstance(model, (SpineNet, SpineNetMobile, ResNet, RetinaNet, MaskRCNN)):
        raise TypeError(f"model must be a spinenet_tf SpineNet, ResNet, RetinaNet or MaskRCNN, got "
                        f"{type(model).__name__}")
    with tempfile.TemporaryDirectory() as tmp:
        path = tf.train.Checkpoint(model=mg_model).write(os.path.join(tmp, "mg"))
        prefix = "model" if not isinstance(model, (RetinaNet, MaskRCNN)) else None
        return load_model_garden_checkpoint(path, model, prefix=prefix)
