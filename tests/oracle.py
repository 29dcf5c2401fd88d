"""The oracle: Google's Model Garden (tf-models-official 2.20.0, `official.vision`, on tf_keras) built for our
registry rows, in one place for the parity tests and bench/.

How to import it: test files write `import oracle` (tests/conftest.py puts `tests/` on `sys.path`); bench scripts
put `tests/` on `sys.path` themselves.

`official` is imported here at module top, on purpose. tf-models-official is pinned in requirements-dev.txt, so
with the dev install a missing or broken oracle is an error in every test that uses it, never a skip: a parity test
that skips has checked nothing. Tests that compare a single Model Garden function (an anchor generator, a box coder,
a loss) import that module where they use it, with a plain import, for the same reason.

What it builds (each for a name of `spinenet_tf.registry`, with Model Garden's own defaults elsewhere):
    backbone_row(name) -> (class, SCALING_MAP row)
        `official/vision/modeling/backbones/spinenet.py` or `spinenet_mobile.py`; a row with its own table (R0-SP53)
        is SpineNet-49's SCALING_MAP row plus that table as `block_specs`; a ResNet row is `backbones/resnet.py`'s
        `ResNet` with its `model_id`.
    backbone(name, height, width, **overrides)
        `SpineNet` / `SpineNetMobile` / `ResNet` with that row, overridden by `overrides` (e.g. activation="swish").
    resnet(model_id, height, width, **overrides)
        `backbones/resnet.py`'s `ResNet` of any depth, Model Garden's defaults overridden by `overrides`.
    retinanet(name, num_classes, height, width)
        `retinanet_model.RetinaNetModel`: the backbone, no decoder (SpineNet RetinaNets use the identity decoder,
        which has no weights), `dense_prediction_heads.RetinaNetHead`, swish as our detectors; built by one call.
        A row with an FPN (R50-FPN) is `modeling.factory.build_retinanet` of MG's `configs.retinanet.RetinaNet`
        (ResNet + `decoders/fpn.py::FPN` + RetinaNetHead, relu, MG's defaults), which builds every weight itself.
    retinanet_raw_outputs(model)
        a tf_keras model of a RetinaNetModel's backbone -> decoder -> head, image -> [cls_outputs, box_outputs]
        ({str level: tensor}), i.e. its call without the detection generator: for outputs and FLOPs.
    maskrcnn_config(name, num_classes, height, width, **overrides) / maskrcnn(...)
        `configs.maskrcnn.MaskRCNN` of a `registry.MASKRCNN_DETECTORS` row, and the `MaskRCNNModel`
        `modeling.factory.build_maskrcnn` makes of it (identity decoder, swish), built by one call.
    randomize_batch_norm(model, seed)
        non-trivial batch-norm statistics, so that a mis-mapped variable shows in an output comparison.
    clear_session()
        frees the Model Garden models no longer referenced (tf_keras' session; the big ones hold gigabytes).
"""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
import tensorflow as tf
import tf_keras
from official.vision.configs import backbones as backbones_config
from official.vision.configs import common, decoders
from official.vision.configs import maskrcnn as maskrcnn_lib
from official.vision.configs import retinanet as retinanet_lib
from official.vision.modeling import factory, retinanet_model
from official.vision.modeling.backbones import resnet as resnet_lib
from official.vision.modeling.backbones import spinenet, spinenet_mobile
from official.vision.modeling.heads import dense_prediction_heads
from official.vision.modeling.layers import detection_generator

from spinenet_tf import registry

MIN_LEVEL, MAX_LEVEL = 3, 7
NUM_SCALES, ASPECT_RATIOS = 3, [0.5, 1.0, 2.0]  # 9 anchors per location, as every registry detector


def input_spec(height: int, width: int | None = None) -> tf_keras.layers.InputSpec:
    return tf_keras.layers.InputSpec(shape=[None, height, width or height, 3])


# Registry rows that are a SCALING_MAP row with another block-spec table (Model Garden's SpineNet takes any table
# on its default two-L2-block stem): name -> SCALING_MAP key.
_TABLE_ROWS = {"r0-sp53": "49"}


def backbone_row(name: str) -> tuple[type, dict]:
    """(Model Garden's class, its SCALING_MAP row) for a registry backbone name: "spinenet-49s" -> SpineNet,
    SCALING_MAP["49S"]; "spinenet-mobile-49xs" -> SpineNetMobile, SCALING_MAP["49XS"]; "r0-sp53" -> SpineNet,
    SCALING_MAP["49"] plus `block_specs`, our table (`backbone` hands Model Garden its own BlockSpecs of it);
    "resnet-50" -> ResNet, {"model_id": 50}."""
    if registry.BACKBONES[name].family == "resnet":
        return resnet_lib.ResNet, {"model_id": registry.BACKBONES[name].model_id}
    if registry.BACKBONES[name].family == "spinenet_mobile":
        return spinenet_mobile.SpineNetMobile, spinenet_mobile.SCALING_MAP[
            name.removeprefix("spinenet-mobile-").upper()]
    if name in _TABLE_ROWS:
        return spinenet.SpineNet, {**spinenet.SCALING_MAP[_TABLE_ROWS[name]],
                                   "block_specs": registry.BACKBONES[name].block_specs}
    return spinenet.SpineNet, spinenet.SCALING_MAP[name.removeprefix("spinenet-").upper()]


def backbone(name: str, height: int = 128, width: int | None = None, **overrides) -> tf_keras.Model:
    """Model Garden's backbone for a registry name, its SCALING_MAP row overridden by `overrides`."""
    cls, scaling = backbone_row(name)
    if "block_specs" in scaling:
        scaling = {**scaling, "block_specs": spinenet.build_block_specs(
            [(s.level, s.block_fn, tuple(s.input_offsets), s.is_output) for s in scaling["block_specs"]])}
    return cls(input_specs=input_spec(height, width), **{**scaling, **overrides})


def resnet(model_id: int, height: int = 128, width: int | None = None, **overrides) -> tf_keras.Model:
    """Model Garden's ResNet of depth `model_id` (`backbones/resnet.py` RESNET_SPECS), its defaults overridden by
    `overrides` (e.g. init_stochastic_depth_rate=0.2)."""
    return resnet_lib.ResNet(model_id=model_id, input_specs=input_spec(height, width), **overrides)


def retinanet(name: str, num_classes: int = 91, height: int = 128, width: int | None = None) -> tf_keras.Model:
    """Model Garden's RetinaNetModel for a `registry.DETECTORS` row, with every weight built (a SpineNet one by one
    call; an FPN one by the factory)."""
    spec = registry.DETECTORS[name]
    width = width or height
    if spec.fpn_num_filters is not None:
        return _retinanet_fpn(spec, num_classes, height, width)
    head = dense_prediction_heads.RetinaNetHead(
        min_level=MIN_LEVEL, max_level=MAX_LEVEL, num_classes=num_classes,
        num_anchors_per_location=NUM_SCALES * len(ASPECT_RATIOS), num_convs=spec.head_num_convs,
        num_filters=spec.head_num_filters, use_separable_conv=spec.head_separable, activation="swish")
    model = retinanet_model.RetinaNetModel(
        backbone(spec.backbone, height, width, activation="swish"), None, head,
        detection_generator.MultilevelDetectionGenerator(), min_level=MIN_LEVEL, max_level=MAX_LEVEL,
        num_scales=NUM_SCALES, aspect_ratios=ASPECT_RATIOS, anchor_size=spec.anchor_size)
    model(np.zeros((1, height, width, 3), np.float32), image_shape=tf.constant([[height, width]]), training=False)
    return model


def _retinanet_fpn(spec: registry.DetectorSpec, num_classes: int, height: int, width: int) -> tf_keras.Model:
    """`factory.build_retinanet` of MG's RetinaNet config for a row with an FPN, as its `retinanet_resnetfpn_coco`
    experiment sets it (official/vision/configs/retinanet.py): ResNet of the row's depth (`backbones.ResNet`
    defaults), `decoders.FPN` of the row's width (sum fusion, no separable conv), RetinaNetHead, the row's
    activation (relu, `common.NormActivation`'s default) and anchors, no synchronized batch norm."""
    config = retinanet_lib.RetinaNet(
        num_classes=num_classes, input_size=[height, width, 3], min_level=MIN_LEVEL, max_level=MAX_LEVEL,
        anchor=retinanet_lib.Anchor(num_scales=NUM_SCALES, aspect_ratios=ASPECT_RATIOS, anchor_size=spec.anchor_size),
        backbone=backbones_config.Backbone(type="resnet", resnet=backbones_config.ResNet(
            model_id=registry.BACKBONES[spec.backbone].model_id)),
        decoder=decoders.Decoder(type="fpn", fpn=decoders.FPN(num_filters=spec.fpn_num_filters)),
        head=retinanet_lib.RetinaNetHead(num_convs=spec.head_num_convs, num_filters=spec.head_num_filters,
                                         use_separable_conv=spec.head_separable),
        norm_activation=common.NormActivation(activation=spec.activation, use_sync_bn=False))
    model = factory.build_retinanet(input_spec(height, width), config)
    # The factory built every layer (it calls the decoder and head on the backbone's symbolic outputs); only a call
    # marks the subclassed model itself built, and a call runs its NMS too (36 s on a zero 128x128 image on 2 CPUs).
    model.built = True
    return model


def retinanet_raw_outputs(model: tf_keras.Model) -> tf_keras.Model:
    """A RetinaNetModel's backbone -> decoder (if any) -> head as one tf_keras model, image -> [cls_outputs,
    box_outputs] ({str level: tensor}): `RetinaNetModel.call` up to its raw outputs, without anchors and the
    detection generator (whose NMS can take most of a minute on CPU)."""
    inputs = tf_keras.Input(model.backbone.input_shape[1:])
    features = model.backbone(inputs)
    if model.decoder is not None:
        features = model.decoder(features)
    scores, boxes, _ = model.head(features)
    return tf_keras.Model(inputs, [scores, boxes])


# Our `build_detector` overrides that Model Garden's Mask R-CNN config expresses: the backbone's width (a backbone
# built here is passed to the factory), and the rest of the config.
_MASKRCNN_BACKBONE_OVERRIDES = ("filter_size_scale", "endpoints_num_filters")
_MASKRCNN_SPEC_OVERRIDES = tuple(field.name for field in dataclasses.fields(registry.MaskRCNNSpec))


def maskrcnn_config(name: str, num_classes: int = 91, height: int = 128, width: int | None = None,
                    rpn_num_proposals: int | None = None, max_detections: int | None = None,
                    **overrides) -> maskrcnn_lib.MaskRCNN:
    """Model Garden's MaskRCNN config for a `registry.MASKRCNN_DETECTORS` row: SpineNet P3-P7, identity decoder,
    one RPN conv, `box_num_convs` convs + one FC box head, mask head, swish, 3 x 3 anchors, Model Garden's proposal
    and sampling defaults (which ours share). `overrides` replace fields of the row (rpn_num_filters, box_fc_dims,
    ...; the backbone-width ones are read by `maskrcnn`); `rpn_num_proposals` and `max_detections` set the
    inference proposal and detection counts."""
    spec = dataclasses.replace(registry.MASKRCNN_DETECTORS[name],
                               **{k: v for k, v in overrides.items() if k in _MASKRCNN_SPEC_OVERRIDES})
    unknown = set(overrides) - set(_MASKRCNN_SPEC_OVERRIDES) - set(_MASKRCNN_BACKBONE_OVERRIDES)
    if unknown:
        raise TypeError(f"maskrcnn_config: no Model Garden counterpart for {sorted(unknown)}")
    roi_generator, generator = maskrcnn_lib.ROIGenerator(), maskrcnn_lib.DetectionGenerator()
    if rpn_num_proposals is not None:
        roi_generator.test_num_proposals = rpn_num_proposals
    if max_detections is not None:
        generator.max_num_detections = max_detections
    return maskrcnn_lib.MaskRCNN(
        num_classes=num_classes, input_size=[height, width or height, 3], min_level=MIN_LEVEL, max_level=MAX_LEVEL,
        anchor=maskrcnn_lib.Anchor(num_scales=NUM_SCALES, aspect_ratios=ASPECT_RATIOS, anchor_size=spec.anchor_size),
        backbone=backbones_config.Backbone(type="spinenet", spinenet=backbones_config.SpineNet(
            model_id=spec.backbone.removeprefix("spinenet-").upper(), min_level=MIN_LEVEL, max_level=MAX_LEVEL)),
        decoder=decoders.Decoder(type="identity", identity=decoders.Identity()),
        rpn_head=maskrcnn_lib.RPNHead(num_convs=1, num_filters=spec.rpn_num_filters),
        detection_head=maskrcnn_lib.DetectionHead(num_convs=spec.box_num_convs, num_filters=spec.box_num_filters,
                                                  num_fcs=1, fc_dims=spec.box_fc_dims),
        mask_head=maskrcnn_lib.MaskHead(num_convs=spec.mask_num_convs, num_filters=spec.mask_num_filters),
        roi_generator=roi_generator, detection_generator=generator,
        norm_activation=common.NormActivation(activation="swish", use_sync_bn=False))


def maskrcnn(name: str, num_classes: int = 91, height: int = 128, width: int | None = None,
             l2_regularizer: tf_keras.regularizers.Regularizer | None = None, **overrides) -> tf_keras.Model:
    """Model Garden's MaskRCNNModel of `maskrcnn_config(...)`, called once on zeros (the factory builds only the
    backbone; the heads build on their first inputs). `filter_size_scale` / `endpoints_num_filters` in `overrides`
    shrink the backbone, which is then built here with the row's other SCALING_MAP settings."""
    width = width or height
    config = maskrcnn_config(name, num_classes, height, width, **overrides)
    backbone_overrides = {k: overrides[k] for k in _MASKRCNN_BACKBONE_OVERRIDES if k in overrides}
    custom_backbone = None
    if backbone_overrides:
        custom_backbone = backbone(registry.MASKRCNN_DETECTORS[name].backbone, height, width, activation="swish",
                                   kernel_regularizer=l2_regularizer, **backbone_overrides)
    model = factory.build_maskrcnn(input_spec(height, width), config, l2_regularizer=l2_regularizer,
                                   backbone=custom_backbone)
    model(tf.zeros([1, height, width, 3]), tf.constant([[height, width]], tf.float32), training=False)
    return model


def randomize_batch_norm(model: tf_keras.Model, seed: int) -> None:
    """Redraws the batch-norm statistics and affine parameters (Model Garden's initial ones are 0 / 1, which would
    hide a swapped mean and beta); kernels keep their fan-in scaled random initialisation."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        name = variable.name.split("/")[-1].split(":")[0]
        shape = tuple(variable.shape)
        if name == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        elif name in ("moving_mean", "beta"):
            value = rng.normal(0.0, 0.2, shape)
        elif name == "gamma":
            value = rng.normal(1.0, 0.2, shape)
        else:
            continue
        variable.assign(value.astype(np.float32))


def clear_session() -> None:
    """Frees the Model Garden models nobody references any more (the big ones hold gigabytes of graph)."""
    tf_keras.backend.clear_session()
    gc.collect()
