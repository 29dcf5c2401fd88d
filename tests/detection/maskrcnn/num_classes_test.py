"""A Mask R-CNN head too small for the data's classes: a one-line error naming --num_classes, before any training.

builtin:shapes keeps every label whatever `num_classes` the reader is given, so `--num_classes=6` (the 6 shape
classes, the background forgotten) used to reach the mask head as class 6 of 6 and fail there in a `GatherV2` op.
"""

from __future__ import annotations

import pytest

from spinenet_tf.training import config as config_lib
from spinenet_tf.training import tasks


def _task(tmp_path, num_classes: int) -> tasks.InstanceSegmentationTask:
    config = config_lib.TrainConfig(
        task="instance_segmentation", model="maskrcnn-spinenet-49s", model_dir=str(tmp_path), image_size=(128, 128),
        num_classes=num_classes, batch_size=2,
        input=config_lib.InputConfig(train_data="builtin:shapes:train[:4]", eval_data="builtin:shapes:validation[:2]",
                                     shuffle_buffer=4)).validate()
    return tasks.make_task(config)


@pytest.mark.parametrize("num_classes", [6, 2])
def test_head_without_room_for_the_background_is_a_one_line_flag_error(tmp_path, num_classes):
    task = _task(tmp_path, num_classes)
    for load in (task.train_dataset, task.eval_dataset):
        with pytest.raises(ValueError) as error:
            load()
        message = str(error.value)
        assert message.startswith(f"--num_classes={num_classes}: --")
        assert "has 6 classes; the Mask R-CNN head needs 7" in message and "\n" not in message


def test_head_with_the_background_class_loads(tmp_path):
    task = _task(tmp_path, 7)
    # The parser is not needed to read the source: _load is what checks the classes.
    loaded = task._load(task.train_source, training=False)
    assert loaded.info.num_classes == 6
