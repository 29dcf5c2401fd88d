"""spinenet_tf: SpineNet (Du et al., CVPR 2020, arXiv:1912.05027) and SpineNet-Mobile (arXiv:2010.11426) in Keras 3.

    import spinenet_tf
    backbone = spinenet_tf.build_backbone("spinenet-49", input_shape=(640, 640, 3))
    features = backbone(images)          # {3: P3, 4: P4, 5: P5, 6: P6, 7: P7}
"""

from __future__ import annotations

from collections.abc import Sequence

__version__ = "0.1.0"

from spinenet_tf import registry
from spinenet_tf.backbones import SpineNet, SpineNetMobile


def list_models(kind: str = "backbone") -> list[str]:
    """The registered names of one kind ("backbone")."""
    tables = {"backbone": registry.BACKBONES}
    return list(registry.lookup(tables, kind, "model kind"))


def build_backbone(name: str, input_shape: Sequence[int | None] = (None, None, 3), **overrides) -> SpineNet:
    """Builds a named SpineNet or SpineNet-Mobile backbone.

    Args:
        name: One of `list_models("backbone")`, e.g. "spinenet-49" or "spinenet-mobile-49xs".
        input_shape: (H, W, 3); H and W divisible by 2**max_level (128 by default), or None.
        **overrides: Constructor arguments to change: activation, norm_momentum, norm_epsilon, use_sync_bn,
            stochastic_depth_rate, min_level, max_level, block_specs, filter_size_scale, block_repeats,
            endpoints_num_filters, and resample_alpha (SpineNet) or se_ratio / expand_ratio (SpineNet-Mobile).

    Returns:
        A `SpineNet` or `SpineNetMobile` whose call returns {level: P_level}.

    Raises:
        ValueError: For an unknown name or override, or arguments the network rejects.
    """
    spec = registry.lookup(registry.BACKBONES, name, "backbone")
    allowed = registry.BACKBONE_OVERRIDES[spec.family]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown override(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    cls = SpineNetMobile if spec.family == "spinenet_mobile" else SpineNet
    return cls(input_shape=tuple(input_shape), name=name.replace("-", "_"), **{**spec.kwargs(), **overrides})


__all__ = ["SpineNet", "SpineNetMobile", "__version__", "build_backbone", "list_models"]
