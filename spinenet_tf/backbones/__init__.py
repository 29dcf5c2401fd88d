"""SpineNet backbones, their block-spec tables and their stems; ResNet, the scale-decreased baseline."""

from spinenet_tf.backbones.block_specs import (DEFAULT_STEM_BLOCKS_PER_LEVEL, R0_SP53_BLOCK_SPECS,
                                               SPINENET_BLOCK_SPECS, SPINENET_MOBILE_BLOCK_SPECS, BlockSpec,
                                               stem_block_levels, validate_block_specs)
from spinenet_tf.backbones.resnet import RESNET_SPECS, ResNet
from spinenet_tf.backbones.spinenet import BlockNode, FeatureSpec, SpineNet, SpineNetMobile, plan_network

__all__ = ["DEFAULT_STEM_BLOCKS_PER_LEVEL", "R0_SP53_BLOCK_SPECS", "RESNET_SPECS", "SPINENET_BLOCK_SPECS",
           "SPINENET_MOBILE_BLOCK_SPECS", "BlockNode", "BlockSpec", "FeatureSpec", "ResNet", "SpineNet",
           "SpineNetMobile", "plan_network", "stem_block_levels", "validate_block_specs"]
