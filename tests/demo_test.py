"""`make demo` end to end, shrunk: train, COCO AP, predictions.png, int8 TFLite export evaluated with LiteRT."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

import testing

pytestmark = [pytest.mark.slow, pytest.mark.litert]


def test_demo_runs_end_to_end(tmp_path):
    model_dir = tmp_path / "demo"
    flags = ("--flagfile=configs/detection_retinanet_spinenet_mobile_49xs_shapes128.flags", f"--model_dir={model_dir}",
             "--image_size=128", "--model_overrides=filter_size_scale=0.25,endpoints_num_filters=8,num_filters=8",
             "--train_data=builtin:shapes:train[:16]", "--shuffle_buffer=16", "--train_steps=3", "--warmup_steps=1",
             "--checkpoint_steps=3", "--num_eval_examples=4", "--eval_batch_size=2", "--picture_images=2",
             "--noprogress_bar")
    command = [sys.executable, "-m", "spinenet_tf.demo", *flags]
    result = subprocess.run(command, cwd=testing.REPO_ROOT, env=testing.train_env(), capture_output=True,
                                    text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((model_dir / "demo_summary.json").read_text())
    assert summary["model"] == "retinanet-spinenet-mobile-49xs" and summary["train_steps"] == 3
    for key in ("AP", "AP50", "tflite_int8_AP"):
        assert 0.0 <= summary[key] <= 1.0
    assert (model_dir / summary["tflite"]).stat().st_size > 10_000
    assert Image.open(model_dir / "predictions.png").size[0] >= 2 * 128
    assert "| AP |" in result.stdout and "| tflite_int8_AP |" in result.stdout
