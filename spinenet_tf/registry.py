"""THE table of named models. Every public name maps to one row here; nothing else lists names.

Backbone scalings are the SpineNet paper's (arXiv:1912.05027, Table 2 and §4.2) as coded in Model Garden's
`SCALING_MAP` (`official/vision/modeling/backbones/spinenet.py`, `spinenet_mobile.py`). R0-SP53 (paper §3.3, Table 1)
is SpineNet-49's scaling with its own block-spec table (`backbones/block_specs.py`). ResNet-50 (family "resnet") is the
scale-decreased backbone of the paper's R50-FPN baseline (Table 3), as Model Garden's `backbones/resnet.py` builds it;
it outputs C2..C5, so it feeds a detector only through an FPN (`DetectorSpec.fpn_num_filters`) and has no classifier.
"""

from __future__ import annotations

import dataclasses

from spinenet_tf.backbones.block_specs import R0_SP53_BLOCK_SPECS, BlockSpec


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How a named backbone differs from the `SpineNet` / `SpineNetMobile` defaults."""

    family: str                  # "spinenet" | "spinenet_mobile"
    filter_size_scale: float
    resample_alpha: float | None  # None for the mobile family (no narrowing 1x1 in its resampling)
    block_repeats: int
    endpoints_num_filters: int
    image_size: int              # the paper's detection resolution for this backbone
    block_specs: tuple[BlockSpec, ...] | None = None  # None: the family's default table (SpineNet-49's topology)

    def kwargs(self) -> dict:
        kwargs = dict(filter_size_scale=self.filter_size_scale, block_repeats=self.block_repeats,
                      endpoints_num_filters=self.endpoints_num_filters)
        if self.resample_alpha is not None:
            kwargs["resample_alpha"] = self.resample_alpha
        if self.block_specs is not None:
            kwargs["block_specs"] = self.block_specs
        return kwargs


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """A ResNet row: Model Garden's `ResNet` (`official/vision/modeling/backbones/resnet.py`) of one depth, with the
    defaults its `retinanet_resnetfpn_coco` experiment uses (`backbones.ResNet`)."""

    model_id: int
    image_size: int              # the detection resolution of its RetinaNet (paper Table 3: 640)
    family: str = "resnet"

    def kwargs(self) -> dict:
        return {"model_id": self.model_id}


#                                     family             width  alpha  repeats  endpoints  image  (paper; MG SCALING_MAP)
BACKBONES = {
    "spinenet-49s":          BackboneSpec("spinenet",        0.65,  0.5,   1,       128,       640),
    "spinenet-49":           BackboneSpec("spinenet",        1.0,   0.5,   1,       256,       640),
    "spinenet-96":           BackboneSpec("spinenet",        1.0,   0.5,   2,       256,       1024),
    "spinenet-143":          BackboneSpec("spinenet",        1.0,   1.0,   3,       256,       1280),
    "spinenet-143l":         BackboneSpec("spinenet",        1.3,   1.0,   3,       256,       1280),
    "spinenet-190":          BackboneSpec("spinenet",        1.3,   1.0,   4,       512,       1280),
    "spinenet-mobile-49xs":  BackboneSpec("spinenet_mobile", 0.6,   None,  1,       24,        256),
    "spinenet-mobile-49s":   BackboneSpec("spinenet_mobile", 0.65,  None,  1,       40,        384),
    "spinenet-mobile-49":    BackboneSpec("spinenet_mobile", 1.0,   None,  1,       48,        384),
    # Paper §3.3 / Table 1 / Fig. 4(c): ResNet-50's blocks scale-permuted; SpineNet-49's widths (§5.3 compares them).
    "r0-sp53":               BackboneSpec("spinenet",        1.0,   0.5,   1,       256,       640,
                                          block_specs=R0_SP53_BLOCK_SPECS),
    # He et al., arXiv:1512.03385 Table 1; the SpineNet paper's scale-decreased baseline (Table 3, R50-FPN).
    "resnet-50":             ResNetSpec(50, 640),
}


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    """A RetinaNet row: its backbone and head, anchors and weight decay (SpineNet paper §5.1; MG experiment YAMLs),
    the default activation of backbone, decoder and head, and the width of its FPN decoder (None: no decoder, the
    backbone's P3..P7 feed the head, as MG's identity decoder does for SpineNet)."""

    backbone: str
    head_num_convs: int
    head_num_filters: int
    head_separable: bool = False
    anchor_size: float = 3.0
    weight_decay: float = 4e-5
    activation: str = "swish"    # Google's SpineNet configs; MG's ResNet-FPN experiment keeps its default relu
    fpn_num_filters: int | None = None

    @property
    def image_size(self) -> int:
        return BACKBONES[self.backbone].image_size


#                                                  backbone                convs filters
DETECTORS = {
    "retinanet-spinenet-49s":         DetectorSpec("spinenet-49s",         4,    128),
    "retinanet-spinenet-49":          DetectorSpec("spinenet-49",          4,    256),
    "retinanet-spinenet-96":          DetectorSpec("spinenet-96",          4,    256),
    "retinanet-spinenet-143":         DetectorSpec("spinenet-143",         4,    256, anchor_size=4.0),
    "retinanet-spinenet-190":         DetectorSpec("spinenet-190",         7,    512, anchor_size=4.0),
    "retinanet-spinenet-mobile-49xs": DetectorSpec("spinenet-mobile-49xs", 4,    24, head_separable=True,
                                                   weight_decay=3e-5),
    "retinanet-spinenet-mobile-49s":  DetectorSpec("spinenet-mobile-49s",  4,    40, head_separable=True,
                                                   weight_decay=3e-5),
    "retinanet-spinenet-mobile-49":   DetectorSpec("spinenet-mobile-49",   4,    48, head_separable=True,
                                                   weight_decay=3e-5),
    "retinanet-r0-sp53":              DetectorSpec("r0-sp53",              4,    256),  # paper §5.3, Table 3
    # The paper's R50-FPN baseline (Table 3, §5) as MG's `retinanet_resnetfpn_coco` experiment builds it
    # (official/vision/configs/retinanet.py: ResNet-50, FPN 256 (decoders.FPN), head 4 x 256, anchor_size 4 (its
    # Anchor default), l2 1e-4, relu). At 640 with 91 classes MG builds 34.09 M params / 96.93 B multiply-adds, and
    # so do we; the paper's row says 34.0 M / 96.8 B (0.3% / 0.1% less). We hold MG's count. Its P6 is a 3x3/2 conv
    # of the FPN's P5, not of C5 as in the RetinaNet paper (which would add 4.1 M parameters).
    "retinanet-resnet50-fpn":         DetectorSpec("resnet-50",            4,    256, anchor_size=4.0,
                                                   weight_decay=1e-4, activation="relu", fpn_num_filters=256),
}


@dataclasses.dataclass(frozen=True)
class MaskRCNNSpec:
    """A Mask R-CNN row: backbone, head widths and anchors (the authors' `spinenet*_mrcnn.yaml` in tensorflow/tpu,
    MG's `coco_spinenet143_mrcnn_tpu.yaml`). The RPN has one 3x3 conv in both codebases (the TPU `RpnHead` ignores
    `num_convs`), so 190's `rpn_head: num_convs: 7` builds one conv of 384."""

    backbone: str
    rpn_num_filters: int
    box_num_convs: int
    box_num_filters: int
    box_fc_dims: int
    mask_num_convs: int
    mask_num_filters: int
    image_size: int              # the paper's Mask R-CNN resolution (SpineNet paper, Mask R-CNN table): 1536 for 190, not 1280
    anchor_size: float = 3.0
    weight_decay: float = 4e-5


#                                       backbone         rpn  box convs  filters  fc    mask convs  filters  image
MASKRCNN_DETECTORS = {
    "maskrcnn-spinenet-49s":  MaskRCNNSpec("spinenet-49s",  128, 4,         128,     512,  4,          128,     640),
    "maskrcnn-spinenet-49":   MaskRCNNSpec("spinenet-49",   256, 4,         256,     1024, 4,          256,     640),
    "maskrcnn-spinenet-96":   MaskRCNNSpec("spinenet-96",   256, 4,         256,     1024, 4,          256,     1024),
    "maskrcnn-spinenet-143":  MaskRCNNSpec("spinenet-143",  256, 4,         256,     1024, 4,          256,     1280,
                                           anchor_size=4.0),
    "maskrcnn-spinenet-190":  MaskRCNNSpec("spinenet-190",  384, 7,         384,     1024, 7,          384,     1536,
                                           anchor_size=5.0),
}

# Keyword overrides `build_detector` passes to MaskRCNN (everything else goes to the backbone).
MASKRCNN_OVERRIDES = ("num_scales", "aspect_ratios", "anchor_size", "rpn_num_convs", "rpn_num_filters",
                      "box_num_convs", "box_num_filters", "box_num_fcs", "box_fc_dims", "mask_num_convs",
                      "mask_num_filters", "head_activation", "roi_crop_size", "mask_crop_size", "rpn_pre_nms_top_k",
                      "rpn_nms_iou_threshold", "rpn_num_proposals", "test_rpn_pre_nms_top_k",
                      "test_rpn_nms_iou_threshold", "score_threshold", "pre_nms_top_k", "iou_threshold",
                      "max_detections", "num_sampled_rois", "num_sampled_masks", "weight_decay")

# Classifiers: every SpineNet backbone with the paper's multi-level head, named "classifier-<backbone>" (derived, not
# listed). ResNet has none: its C2..C5 differ in width, and the head averages P3..P7 of one width.
CLASSIFIERS = {f"classifier-{name}": name for name, row in BACKBONES.items() if row.family != "resnet"}
# NOTE: the paper trains classifiers at 224x224 (§5.5), which is not a multiple of 2**7; every level here must
# divide the input exactly, so our default is 256.
CLASSIFIER_IMAGE_SIZE = 256

# Keyword overrides `build_detector` passes to RetinaNet (everything else goes to the backbone).
DETECTOR_OVERRIDES = ("num_convs", "num_filters", "use_separable_conv", "head_activation", "num_scales",
                      "aspect_ratios", "anchor_size", "focal_alpha", "focal_gamma", "huber_delta", "box_loss_weight",
                      "weight_decay", "score_threshold", "pre_nms_top_k", "iou_threshold", "max_detections",
                      "class_agnostic_nms", "skip_class_zero")
CLASSIFIER_OVERRIDES = ("dropout_rate", "label_smoothing")

# Keyword overrides `build_backbone` accepts, per family (the constructor arguments users may change).
_COMMON_OVERRIDES = ("activation", "norm_momentum", "norm_epsilon", "use_sync_bn", "stochastic_depth_rate",
                     "min_level", "max_level", "block_specs", "filter_size_scale", "block_repeats",
                     "endpoints_num_filters")
BACKBONE_OVERRIDES = {
    "spinenet": _COMMON_OVERRIDES + ("resample_alpha", "stem_blocks_per_level"),
    "spinenet_mobile": _COMMON_OVERRIDES + ("se_ratio", "expand_ratio"),
    "resnet": ("activation", "norm_momentum", "norm_epsilon", "use_sync_bn", "stochastic_depth_rate",
               "depth_multiplier"),
}


def backbone_family(model: str) -> str | None:
    """The backbone family ("spinenet" / "spinenet_mobile" / "resnet") of any registered model name, None for an
    unknown one."""
    backbones = {**{name: row.backbone for name, row in {**DETECTORS, **MASKRCNN_DETECTORS}.items()}, **CLASSIFIERS}
    backbone = backbones.get(model, model)
    return BACKBONES[backbone].family if backbone in BACKBONES else None


def lookup(table: dict, name: str, kind: str):
    """The row of `name`, or a ValueError listing the valid names."""
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid names: {', '.join(table)}")
    return table[name]
