"""Tests of spinenet_tf/summary.py, the `python -m spinenet_tf.summary` CLI, run as a user would in a subprocess."""

import json
import os
import pathlib
import subprocess
import sys

import spinenet_tf
from spinenet_tf import model_stats

_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "spinenet_tf.summary", *args], cwd=_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_json_output():
    result = _run("--model", "spinenet-mobile-49xs", "--image-size", "256", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["model"] == "spinenet-mobile-49xs"
    assert summary["image_size"] == [256, 256]
    # 0.873 M params for RetinaNet-Mobile-49XS (backbone + head): what Model Garden's code builds
    # (tf-models-official 2.20.0). The backbone is most of it.
    assert 0.7e6 < summary["params"] < 0.873e6
    # 0.18 B multiply-adds for the whole detector at 256, what Model Garden's code builds (tf-models-official
    # 2.20.0); the backbone is below that.
    assert 0.08e9 < summary["flops"] < 0.18e9
    assert sum(group["params"] for group in summary["per_level"].values()) == summary["params"]
    assert sum(group["flops"] for group in summary["per_level"].values()) == summary["flops"]
    # P7 endpoint at 256: a 2x2 map, 1x1 conv from int(112 * 0.6) = 67 to 24 channels (FILTER_SIZE_MAP and
    # SCALING_MAP['49XS'] in Model Garden's `official/vision/modeling/backbones/spinenet_mobile.py`).
    assert summary["per_level"]["P7"]["flops"] == 2 * 2 * 67 * 24


def test_unknown_model_lists_valid_names():
    result = _run("--model", "spinenet-50", "--image_size", "256")
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert "spinenet-50" in error
    for name in spinenet_tf.list_models("backbone"):
        assert name in error


def test_image_size_not_divisible_by_128():
    result = _run("--model", "spinenet-49", "--image_size", "600")
    assert result.returncode != 0
    assert "--image_size=600:" in result.stderr and "128" in result.stderr.strip().splitlines()[-1]


def test_mask_rcnn_counts_the_whole_inference_pass():
    result = _run("--model", "maskrcnn-spinenet-49s", "--image_size", "128", "--num_classes", "7", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    model = spinenet_tf.build_detector("maskrcnn-spinenet-49s", 7, (128, 128))
    assert summary["params"] == model_stats.count_params(model)
    # The mask head's 1x1 mask predictor alone: 100 detection slots x 28 x 28 x 128 channels x 7 classes.
    assert summary["per_level"]["head"]["flops"] > 100 * 28 * 28 * 128 * 7
    backbone = model_stats.count_flops(spinenet_tf.build_backbone("spinenet-49s", (128, 128, 3)), (128, 128, 3))
    assert summary["flops"] > 2 * backbone  # at 128 px the second stage on 1000 RoIs outweighs the backbone


def test_mask_rcnn_needs_a_background_class():
    result = _run("--model", "maskrcnn-spinenet-49s", "--image_size", "128", "--num_classes", "1")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].endswith("--num_classes=1: must be >= 2 (class 0 is the background)")
