"""spinenet_tf: SpineNet (Du et al., CVPR 2020, arXiv:1912.05027) and SpineNet-Mobile (arXiv:2010.11426) in Keras 3.

    import spinenet_tf
    backbone = spinenet_tf.build_backbone("spinenet-49", input_shape=(640, 640, 3))
    features = backbone(images)          # {3: P3, 4: P4, 5: P5, 6: P6, 7: P7}
"""

from __future__ import annotations

from collections.abc import Sequence

__version__ = "0.1.0"

from spinenet_tf import registry
from spinenet_tf.backbones import ResNet, SpineNet, SpineNetMobile, block_spec_file
from spinenet_tf.classification import Classifier
from spinenet_tf.detection.fpn import FPN
from spinenet_tf.detection.maskrcnn.model import MaskRCNN
from spinenet_tf.detection.retinanet import RetinaNet

_BACKBONE_CLASSES = {"spinenet": SpineNet, "spinenet_mobile": SpineNetMobile, "resnet": ResNet}


def list_models(kind: str = "backbone") -> list[str]:
    """The registered names of one kind: "backbone", "detector" (RetinaNet and Mask R-CNN) or "classifier"."""
    tables = {"backbone": registry.BACKBONES, "detector": {**registry.DETECTORS, **registry.MASKRCNN_DETECTORS},
              "classifier": registry.CLASSIFIERS}
    return list(registry.lookup(tables, kind, "model kind"))


def _split_overrides(name: str, overrides: dict, own: Sequence[str], backbone: str) -> tuple[dict, dict]:
    """Separates a task model's own keyword overrides from those meant for its backbone."""
    family = registry.BACKBONES[backbone].family
    allowed = tuple(own) + registry.BACKBONE_OVERRIDES[family]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown override(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return ({k: v for k, v in overrides.items() if k in own},
            {k: v for k, v in overrides.items() if k not in own})


def _image_shape(input_shape, default: int) -> tuple:
    if input_shape is None:
        return (default, default, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) == 2:
        input_shape += (3,)
    return input_shape


def build_detector(name: str, num_classes: int, input_shape: Sequence[int] | None = None,
                   **overrides) -> RetinaNet | MaskRCNN:
    """Builds a named RetinaNet or Mask R-CNN detector.

    Args:
        name: One of `list_models("detector")`, e.g. "retinanet-spinenet-49", "maskrcnn-spinenet-49" or
            "retinanet-resnet50-fpn" (the paper's R50-FPN baseline: ResNet-50 -> `FPN` -> head).
        num_classes: Class channels of the head (91 for Model Garden's COCO layout; for Mask R-CNN including the
            background class 0, so at least 2).
        input_shape: (H, W) or (H, W, 3), multiples of 2**max_level; defaults to the paper's resolution.
        **overrides: RetinaNet arguments (num_convs, num_filters, anchor_size, weight_decay, focal_gamma, ...) or
            MaskRCNN arguments (rpn_num_filters, box_fc_dims, rpn_num_proposals, max_detections, ...), and
            backbone arguments (see `build_backbone`). `activation` sets the backbone's (and the FPN's) and,
            unless `head_activation` is given, the heads'; the default is the row's: "swish" for SpineNet (Google's
            SpineNet configs), "relu" for ResNet-FPN (Model Garden's ResNet, FPN and `retinanet_resnetfpn_coco`
            defaults).

    Raises:
        ValueError: Unknown name (the valid ones are listed), num_classes too small, bad size or override.
    """
    spec = registry.lookup({**registry.DETECTORS, **registry.MASKRCNN_DETECTORS}, name, "detector")
    is_maskrcnn = name in registry.MASKRCNN_DETECTORS
    min_classes = 2 if is_maskrcnn else 1
    if num_classes < min_classes:
        why = " (class 0 is the background)" if is_maskrcnn else ""
        raise ValueError(f"{name}: num_classes={num_classes}: must be >= {min_classes}{why}")
    own_names = registry.MASKRCNN_OVERRIDES if is_maskrcnn else registry.DETECTOR_OVERRIDES
    own, backbone_overrides = _split_overrides(name, overrides, own_names, spec.backbone)
    backbone_overrides.setdefault("activation", "swish" if is_maskrcnn else spec.activation)
    own.setdefault("head_activation", backbone_overrides["activation"])
    backbone = build_backbone(spec.backbone, _image_shape(input_shape, spec.image_size), **backbone_overrides)
    if is_maskrcnn:
        kwargs = dict(anchor_size=spec.anchor_size, rpn_num_filters=spec.rpn_num_filters,
                      box_num_convs=spec.box_num_convs, box_num_filters=spec.box_num_filters,
                      box_fc_dims=spec.box_fc_dims, mask_num_convs=spec.mask_num_convs,
                      mask_num_filters=spec.mask_num_filters, weight_decay=spec.weight_decay)
        return MaskRCNN(backbone, num_classes, name=name.replace("-", "_"), **{**kwargs, **own})
    kwargs = dict(num_convs=spec.head_num_convs, num_filters=spec.head_num_filters,
                  use_separable_conv=spec.head_separable, anchor_size=spec.anchor_size,
                  weight_decay=spec.weight_decay)
    if spec.fpn_num_filters is not None:
        kwargs["decoder"] = FPN(num_filters=spec.fpn_num_filters, activation=backbone.activation,
                                norm_momentum=backbone.norm_momentum, norm_epsilon=backbone.norm_epsilon,
                                use_sync_bn=backbone.use_sync_bn, name="fpn")
    return RetinaNet(backbone, num_classes, name=name.replace("-", "_"), **{**kwargs, **own})


def build_classifier(name: str, num_classes: int, input_shape: Sequence[int] | None = None,
                     **overrides) -> Classifier:
    """Builds a SpineNet classifier with the paper's multi-level head.

    Args:
        name: One of `list_models("classifier")` ("classifier-spinenet-49", ...) or its backbone's name (SpineNet
            backbones only: a ResNet's C2..C5 do not fit the multi-level head).
        num_classes: Number of classes.
        input_shape: (H, W) or (H, W, 3), multiples of 2**max_level; default 256x256.
        **overrides: dropout_rate, label_smoothing, and backbone arguments (e.g. activation="swish",
            stochastic_depth_rate=0.2 for the paper's improved protocol).
    """
    backbone_name = registry.CLASSIFIERS.get(name, name if name in registry.CLASSIFIERS.values() else None)
    if backbone_name is None:
        registry.lookup(registry.CLASSIFIERS, name, "classifier")
    if num_classes < 1:
        raise ValueError(f"{name}: num_classes={num_classes}: must be >= 1")
    own, backbone_overrides = _split_overrides(name, overrides, registry.CLASSIFIER_OVERRIDES, backbone_name)
    backbone = build_backbone(backbone_name, _image_shape(input_shape, registry.CLASSIFIER_IMAGE_SIZE),
                              **backbone_overrides)
    return Classifier(backbone, num_classes, name=f"classifier_{backbone_name.replace('-', '_')}", **own)


def build_backbone(name: str, input_shape: Sequence[int | None] = (None, None, 3),
                   **overrides) -> SpineNet | ResNet:
    """Builds a named SpineNet, SpineNet-Mobile or ResNet backbone.

    Args:
        name: One of `list_models("backbone")`, e.g. "spinenet-49", "spinenet-mobile-49xs" or "resnet-50".
        input_shape: (H, W, 3); H and W divisible by 2**max_level (128 by default), or None.
        **overrides: Constructor arguments to change: activation, norm_momentum, norm_epsilon, use_sync_bn,
            stochastic_depth_rate, min_level, max_level, block_specs, filter_size_scale, block_repeats,
            endpoints_num_filters, and resample_alpha / stem_blocks_per_level (SpineNet) or se_ratio / expand_ratio
            (SpineNet-Mobile). `block_specs` is a table (rows), or a block-spec file (a path, or the file's JSON
            object; `backbones.block_spec_file`), which also sets the stem it names. A ResNet takes activation
            (default "relu", Model Garden's), norm_momentum, norm_epsilon, use_sync_bn, stochastic_depth_rate and
            depth_multiplier.

    Returns:
        A `SpineNet` or `SpineNetMobile` whose call returns {level: P_level} (P3..P7 by default), or a `ResNet`
        returning {level: C_level} for levels 2..5.

    Raises:
        ValueError: For an unknown name or override, or arguments the network rejects; a bad block-spec file
            in one line naming it (FileNotFoundError when it is missing).
    """
    spec = registry.lookup(registry.BACKBONES, name, "backbone")
    allowed = registry.BACKBONE_OVERRIDES[spec.family]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown override(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    overrides = block_spec_file.resolve_overrides(overrides, spec.family)
    return _BACKBONE_CLASSES[spec.family](input_shape=tuple(input_shape), name=name.replace("-", "_"),
                                          **{**spec.kwargs(), **overrides})


__all__ = ["Classifier", "FPN", "MaskRCNN", "ResNet", "RetinaNet", "SpineNet", "SpineNetMobile", "__version__",
           "build_backbone", "build_classifier", "build_detector", "list_models"]
