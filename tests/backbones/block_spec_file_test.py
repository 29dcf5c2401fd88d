"""Tests of spinenet_tf/backbones/block_spec_file.py: block-spec files (a table and its stem as JSON) as
`build_backbone` / `build_detector`, `train --block_specs`, `summary` and `draw` take them, and their one-line errors
naming the file."""

import json
import subprocess
import sys

import pytest

import spinenet_tf
import testing
from spinenet_tf import model_stats, models
from spinenet_tf.backbones import R0_SP53_BLOCK_SPECS, SPINENET_BLOCK_SPECS, SPINENET_MOBILE_BLOCK_SPECS
from spinenet_tf.backbones.block_spec_file import Architecture, read_block_spec_file
from spinenet_tf.training import config as config_lib

R0_SP53 = Architecture("spinenet", R0_SP53_BLOCK_SPECS, (2, 0, 0, 0))
SIZE = (128, 128, 3)


def _write(tmp_path, data, name="table.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def _command(name, *flags):
    """`python -m spinenet_tf.<name> flags...` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", f"spinenet_tf.{name}", *flags], cwd=testing.REPO_ROOT,
                          env=testing.train_env(), capture_output=True, text=True, timeout=300)


def _rows(specs):
    return [spec.to_list() for spec in specs]


def test_a_file_round_trips_and_extra_keys_are_ignored(tmp_path):
    path = _write(tmp_path, {**R0_SP53.to_json_dict(), "trial": 7, "reward": 0.25})  # a search's best.json
    assert read_block_spec_file(path) == R0_SP53
    # Only block_specs is required: the family defaults to the model's, the stem to SpineNet's.
    bare = _write(tmp_path, {"block_specs": _rows(SPINENET_MOBILE_BLOCK_SPECS)}, "bare.json")
    assert read_block_spec_file(bare, "spinenet_mobile") == Architecture("spinenet_mobile",
                                                                        SPINENET_MOBILE_BLOCK_SPECS, None)


def test_build_backbone_takes_a_path_or_the_files_object(tmp_path):
    path = _write(tmp_path, R0_SP53.to_json_dict())
    expected = spinenet_tf.build_backbone("r0-sp53", SIZE).get_config()
    for value in (path, R0_SP53.to_json_dict()):
        config = spinenet_tf.build_backbone("spinenet-49", SIZE, block_specs=value).get_config()
        assert {k: v for k, v in config.items() if k != "name"} == {k: v for k, v in expected.items() if k != "name"}


def test_the_files_stem_is_built(tmp_path):
    # SpineNet-49's 15 searched rows behind a 3-block L2 stem: every offset still names an earlier block.
    path = _write(tmp_path, {"family": "spinenet", "stem_blocks_per_level": [3],
                             "block_specs": _rows(SPINENET_BLOCK_SPECS[:15])})
    backbone = spinenet_tf.build_backbone("spinenet-49s", SIZE, block_specs=path)
    assert backbone.stem_blocks_per_level == (3, 0, 0, 0)
    assert [level for level, _ in backbone.stem] == [2, 2, 2]
    # The same stem given twice is fine; another one is refused.
    spinenet_tf.build_backbone("spinenet-49s", SIZE, block_specs=path, stem_blocks_per_level=(3, 0, 0, 0))
    with pytest.raises(ValueError, match=r"stem_blocks_per_level=\(2, 0, 0, 0\) differs from the block-spec file's "
                                         r"\(3, 0, 0, 0\)"):
        spinenet_tf.build_backbone("spinenet-49s", SIZE, block_specs=path, stem_blocks_per_level=(2, 0, 0, 0))


def test_detectors_and_classifiers_take_it():
    detector = spinenet_tf.build_detector("retinanet-spinenet-49s", 3, SIZE[:2], block_specs=R0_SP53.to_json_dict())
    assert detector.backbone.block_specs == R0_SP53_BLOCK_SPECS
    classifier = spinenet_tf.build_classifier("classifier-spinenet-49s", 3, SIZE[:2],
                                              block_specs=R0_SP53.to_json_dict())
    assert classifier.backbone.block_specs == R0_SP53_BLOCK_SPECS


@pytest.mark.parametrize("content, match", [
    ("{not json", r"not a JSON block-spec file \(Expecting property name"),
    ([[2, "bottleneck", [0, 1], False]], r"expected a JSON object with the keys family, stem_blocks_per_level, "
                                         r"block_specs, got list"),
    ({"family": "spinenet"}, r'no "block_specs" key'),
    ({"block_specs": []}, r'"block_specs" must be a non-empty list of rows'),
    ({"block_specs": [[2, "bottleneck", [0, 1]]]}, r'"block_specs": a row is not \[level, block_fn'),
    ({"family": "resnet", "block_specs": [[2, "bottleneck", [0, 1], False]]},
     r"family 'resnet' is not one of spinenet, spinenet_mobile"),
    ({"block_specs": _rows(R0_SP53_BLOCK_SPECS[:-1])}, r"no output block at level\(s\) \[6\]"),
    ({"block_specs": [[3, "bottleneck", [0, 5], True]]}, r"block 2 \(row 0\): input offset 5 is not an earlier"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path, content, match):
    path = _write(tmp_path, content)
    with pytest.raises(ValueError, match=match) as error:
        spinenet_tf.build_backbone("spinenet-49", SIZE, block_specs=path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def test_a_missing_file_or_another_family_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json: no such block-spec file"):
        spinenet_tf.build_backbone("spinenet-49", SIZE, block_specs=str(tmp_path / "nope.json"))
    path = _write(tmp_path, R0_SP53.to_json_dict())
    with pytest.raises(ValueError, match=rf"^{path}: a spinenet table cannot build a spinenet_mobile model$"):
        spinenet_tf.build_backbone("spinenet-mobile-49xs", SIZE, block_specs=path)
    mobile = _write(tmp_path, {"family": "spinenet_mobile", "stem_blocks_per_level": [2],
                               "block_specs": _rows(SPINENET_MOBILE_BLOCK_SPECS)}, "mobile.json")
    with pytest.raises(ValueError, match=r'"stem_blocks_per_level": \[2\]: the spinenet_mobile stem is fixed'):
        spinenet_tf.build_backbone("spinenet-mobile-49xs", SIZE, block_specs=mobile)


def test_train_config_embeds_the_table_not_the_path(tmp_path):
    path = _write(tmp_path, R0_SP53.to_json_dict())
    overrides = config_lib.block_specs_override(path, "retinanet-spinenet-49s", {"filter_size_scale": 0.25})
    assert overrides == {"filter_size_scale": 0.25, "block_specs": R0_SP53.to_json_dict()}
    config = config_lib.TrainConfig(task="detection", model="retinanet-spinenet-49s", model_dir=str(tmp_path),
                                    image_size=SIZE[:2], num_classes=3, model_overrides=overrides)
    reloaded = config_lib.TrainConfig.from_dict(json.loads(config.to_json()))
    assert models.build_model(reloaded.model_config()).backbone.block_specs == R0_SP53_BLOCK_SPECS
    with pytest.raises(ValueError, match=r"--block_specs=.*: --model_overrides sets block_specs too; give one"):
        config_lib.block_specs_override(path, "retinanet-spinenet-49s", overrides)


@pytest.mark.parametrize("command", ["train", "summary", "draw"])
def test_the_commands_name_a_bad_file_in_one_line(tmp_path, command):
    path = _write(tmp_path, {"block_specs": _rows(R0_SP53_BLOCK_SPECS[:-1])})
    flags = {"train": ["--task=detection", "--model=retinanet-spinenet-49s", f"--model_dir={tmp_path / 'run'}",
                       "--train_data=builtin:shapes:train[:4]", "--eval_data=builtin:shapes:validation[:4]"],
             "summary": ["--model=retinanet-spinenet-49s", "--image_size=128"],
             "draw": ["--model=spinenet-49s", f"--out={tmp_path / 'x.png'}"]}[command]
    result = _command(command, *flags, f"--block_specs={path}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: {path}: block specs: no output block at level(s) [6]; outputs must " \
                                    "cover levels 3..7"
    assert not (tmp_path / "run").exists()


def test_summary_counts_the_files_table(tmp_path):
    path = _write(tmp_path, R0_SP53.to_json_dict())
    result = _command("summary", "--model=spinenet-49", "--image_size=256", f"--block_specs={path}", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["block_specs"] == path
    # SpineNet-49's widths with R0-SP53's table: the registry's r0-sp53 backbone (19.34 M parameters).
    assert summary["params"] == model_stats.count_params(spinenet_tf.build_backbone("r0-sp53", SIZE))
