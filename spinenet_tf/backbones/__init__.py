"""SpineNet backbones and their block-spec tables."""

from spinenet_tf.backbones.block_specs import (SPINENET_BLOCK_SPECS, SPINENET_MOBILE_BLOCK_SPECS, BlockSpec,
                                               validate_block_specs)
from spinenet_tf.backbones.spinenet import BlockNode, FeatureSpec, SpineNet, SpineNetMobile, plan_network

__all__ = ["SPINENET_BLOCK_SPECS", "SPINENET_MOBILE_BLOCK_SPECS", "BlockNode", "BlockSpec", "FeatureSpec",
           "SpineNet", "SpineNetMobile", "plan_network", "validate_block_specs"]
