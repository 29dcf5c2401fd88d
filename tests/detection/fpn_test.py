"""Tests of spinenet_tf/detection/fpn.py (`FPN`): the levels it builds from a backbone's, their shapes, config and
errors. Its weight-for-weight parity with Model Garden's `decoders/fpn.py::FPN` is tested through the detector it
serves, in tests/detection/retinanet_resnet_fpn_test.py.

Structural facts of Model Garden's FPN (tf-models-official 2.20.0, `official/vision/modeling/decoders/fpn.py`):
laterals on levels min_level..min(backbone top, max_level), coarser levels by stride-2 3x3 convs from the top
level's output, a batch norm per output level.
"""

import json

import keras
import numpy as np
import pytest

from spinenet_tf.detection.fpn import FPN


def _features(levels, height=256, width=128, channels=None, seed=0):
    rng = np.random.default_rng(seed)
    return {level: rng.normal(size=(2, height >> level, width >> level, (channels or {}).get(level, 8 * level)))
            .astype(np.float32) for level in levels}


def _shapes(outputs):
    return {level: tuple(x.shape) for level, x in outputs.items()}


def test_resnet_levels_give_p3_to_p7():
    fpn = FPN(num_filters=16)
    outputs = fpn(_features((2, 3, 4, 5)))  # a ResNet's C2..C5 (non-square); C2 is below min_level: ignored
    expected = {level: (2, 256 >> level, 128 >> level, 16) for level in range(3, 8)}
    assert _shapes(outputs) == expected
    assert fpn.compute_output_shape({level: (2, 256 >> level, 128 >> level, 8 * level) for level in (2, 3, 4, 5)}) \
        == expected
    assert fpn.top_level == 5
    assert sorted(fpn.laterals) == sorted(fpn.post_hoc) == [3, 4, 5] and sorted(fpn.coarser) == [6, 7]
    assert sorted(fpn.upsample) == sorted(fpn.fuse) == [3, 4]
    assert all(np.all(np.isfinite(np.asarray(x))) for x in outputs.values())
    # Each lateral reads its own level's width (bias included), every other conv the pyramid's.
    assert tuple(fpn.laterals[5].kernel.shape) == (1, 1, 40, 16) and fpn.laterals[5].use_bias
    assert tuple(fpn.coarser[7].kernel.shape) == (3, 3, 16, 16) and fpn.coarser[7].strides == (2, 2)


def test_a_backbone_reaching_max_level_needs_no_coarser_level():
    fpn = FPN(num_filters=8)
    outputs = fpn(_features(range(3, 8)))
    assert sorted(outputs) == [3, 4, 5, 6, 7] and fpn.top_level == 7 and not fpn.coarser


def test_levels_above_max_level_are_ignored():
    fpn = FPN(min_level=3, max_level=4, num_filters=8)
    assert sorted(fpn(_features((3, 4, 5)))) == [3, 4] and fpn.top_level == 4 and not fpn.coarser


def test_the_coarsest_level_reads_the_activated_level_below():
    # P7 = coarser_7(act(P6 before its batch norm)), P6 = coarser_6(P5 after post-hoc, before its batch norm): the
    # activation is used there only, so with the same weights and another activation only P7 changes.
    features = _features((3, 4, 5))
    outputs = {}
    for activation in ("relu", "swish"):
        keras.utils.set_random_seed(0)
        outputs[activation] = FPN(num_filters=8, activation=activation)(features)
    for level in range(3, 7):
        np.testing.assert_allclose(np.asarray(outputs["relu"][level]), np.asarray(outputs["swish"][level]))
    assert not np.allclose(np.asarray(outputs["relu"][7]), np.asarray(outputs["swish"][7]))


def test_config_round_trip():
    fpn = FPN(min_level=3, max_level=6, num_filters=32, activation="swish", norm_momentum=0.9, norm_epsilon=1e-4,
              name="fpn")
    config = fpn.get_config()
    assert {key: config[key] for key in ("min_level", "max_level", "num_filters", "activation", "norm_momentum",
                                         "norm_epsilon", "use_sync_bn")} == dict(
        min_level=3, max_level=6, num_filters=32, activation="swish", norm_momentum=0.9, norm_epsilon=1e-4,
        use_sync_bn=False)
    revived = keras.saving.deserialize_keras_object(json.loads(json.dumps(keras.saving.serialize_keras_object(fpn))))
    assert type(revived) is FPN and revived.get_config() == config


@pytest.mark.parametrize("kwargs, levels, match", [
    (dict(), (4, 5), r"FPN min_level=3: the input lacks levels \[3\] \(it has \[4, 5\]\)"),
    (dict(), (2, 3, 5), r"FPN min_level=3: the input lacks levels \[4\] \(it has \[2, 3, 5\]\)"),
    (dict(min_level=5, max_level=4), None, r"min_level=5: must be <= max_level=4"),
])
def test_errors(kwargs, levels, match):
    with pytest.raises(ValueError, match=match):
        FPN(**kwargs)(_features(levels))
