"""`bench/train_throughput.py`'s demo row is `make demo`'s model and optimizer, on both sides of the comparison."""

from __future__ import annotations

import sys

import testing

sys.path.insert(0, str(testing.REPO_ROOT / "bench"))
import train_throughput  # noqa: E402  (bench/train_throughput.py)

DEMO_FLAGS = testing.REPO_ROOT / "configs" / "detection_retinanet_spinenet_mobile_49xs_shapes128.flags"


def test_demo_row_is_the_demo_flagfiles_model_and_optimizer():
    config = testing.train_config(f"--flagfile={DEMO_FLAGS}", "--model_dir=/tmp/unused")
    row = train_throughput.ROWS["demo"]
    optimizer = config.optimizer
    assert (row["model"], (row["image_size"],) * 2, row["batch_size"]) == (config.model, config.image_size,
                                                                           config.batch_size)
    assert (row["optimizer"], row["learning_rate"], row["weight_decay"], row["gradient_clip_norm"]) == (
        optimizer.optimizer, optimizer.learning_rate, optimizer.weight_decay, optimizer.gradient_clip_norm)
    overrides = dict(config.model_overrides)
    assert overrides.pop("activation", "swish") == "swish"  # the default of both sides (registry; MG's row config)
    assert row["overrides"] == overrides


def test_model_gardens_side_builds_the_rows_head_and_anchors():
    for name, head_filters, anchor_size, clip in (("demo", 128, 1.5, 10.0), ("mobile49xs", 24, 3.0, None)):
        task, optimization = train_throughput.mg_task(name, steps=5)
        model = task.task_config.model
        assert (model.head.num_filters, model.anchor.anchor_size, model.input_size[0]) == (
            head_filters, anchor_size, train_throughput.ROWS[name]["image_size"]), name
        assert optimization.optimizer.adamw_experimental.global_clipnorm == clip, name
