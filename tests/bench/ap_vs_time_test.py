"""`bench/ap_vs_time.py` on a tiny run of the demo recipe: 20 steps, a checkpoint every 10, each one evaluated,
drawn against its training seconds, and the table written as CSV and Markdown."""

from __future__ import annotations

import csv
import shlex
import subprocess
import sys

import pytest
from PIL import Image

import testing

pytestmark = pytest.mark.slow


def test_every_checkpoint_is_scored_and_drawn_against_its_training_seconds(tmp_path):
    out = tmp_path / "pictures" / "ap.png"
    flags = (f"--model_dir={tmp_path / 'run'}", "--checkpoint_steps=10", f"--out={out}",
             # to the training command, after the demo's flagfile:
             "--model_overrides=filter_size_scale=0.25,endpoints_num_filters=8,num_filters=8",
             "--train_data=builtin:shapes:train[:16]", "--shuffle_buffer=16", "--batch_size=4", "--train_steps=20",
             "--warmup_steps=1", "--num_eval_examples=4", "--eval_batch_size=2", "--noprogress_bar")
    result = subprocess.run([sys.executable, "bench/ap_vs_time.py", *flags], cwd=testing.REPO_ROOT,
                            env=testing.train_env(), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]

    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert [int(row["step"]) for row in rows] == [10, 20]
    seconds = [float(row["train_seconds"]) for row in rows]
    assert 0 < seconds[0] < seconds[1]
    for row in rows:
        assert 0.0 <= float(row["AP"]) <= float(row["AP50"]) <= 1.0 and int(row["num_images"]) == 4
    assert Image.open(out).size[0] >= 600
    command = shlex.join(["python", "bench/ap_vs_time.py", *flags])
    assert f"made with: {command}" in result.stdout
    markdown = out.with_suffix(".md").read_text()
    assert command in markdown and "--flagfile=configs/detection_retinanet_spinenet_mobile_49xs_shapes128.flags" \
        in markdown and "| 20 |" in markdown and "![AP against seconds](ap.png)" in markdown
