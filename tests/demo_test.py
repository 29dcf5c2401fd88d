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
             "--picture_score_threshold=0.05", "--noprogress_bar")
    command = [sys.executable, "-m", "spinenet_tf.demo", *flags]
    result = subprocess.run(command, cwd=testing.REPO_ROOT, env=testing.train_env(), capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((model_dir / "demo_summary.json").read_text())
    assert summary["model"] == "retinanet-spinenet-mobile-49xs" and summary["train_steps"] == 3
    assert summary["eval_images"] == 4 and summary["train_seconds"] > 0
    # Float (training's per-class NMS, and the export's fast NMS) and int8 on the same 4 validation images; the gap
    # is int8 against the float model with the same NMS.
    for name in ("AP", "AP50"):
        values = [summary[f"{prefix}_{name}"] for prefix in ("keras_float", "keras_float_fast_nms", "tflite_int8")]
        assert all(0.0 <= value <= 1.0 for value in values), values
        assert abs(summary[f"int8_minus_float_{name}"] - (values[2] - values[1])) <= 1e-4
        assert f"| int8_minus_float_{name} |" in result.stdout
    assert "AP" not in summary, "one float AP, labelled as such"
    assert (model_dir / "detector_int8.tflite").stat().st_size > 10_000 and summary["tflite_int8_MB"] > 0
    # Two 256 px validation images, each enlarged to 512 px, side by side 8 px apart.
    assert Image.open(model_dir / "predictions.png").size == (2 * 512 + 8, 512)
