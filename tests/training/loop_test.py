"""The training loop for real: a SIGKILLed run resumes, a NaN loss stops it, mirrored replicas, bad flags.

Runs `python -m spinenet_tf.train` in subprocesses on the built-in data with a shrunk registry detector
(`testing.TINY_DETECTOR_FLAGS`), so what is tested is the command users run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

import testing
from spinenet_tf import checkpoints
from spinenet_tf.training import config as config_lib
from spinenet_tf.training import loop


def _checkpoint_steps(model_dir) -> list[int]:
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, checkpoints.CHECKPOINT_DIR))
    if state is None:
        return []
    return sorted(int(path.rsplit("-", 1)[1]) for path in state.all_model_checkpoint_paths)


def _wait_for_checkpoint(process, model_dir, timeout: float) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = _checkpoint_steps(model_dir)
        if steps:
            return steps[-1]
        if process.poll() is not None:
            raise AssertionError(f"train exited {process.returncode} before its first checkpoint:\n"
                                 f"{process.stderr.read()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"no checkpoint in {model_dir} after {timeout} s")


def test_sigkilled_run_resumes_from_its_last_checkpoint(tmp_path):
    model_dir = str(tmp_path / "run")
    flags = (*testing.TINY_DETECTOR_FLAGS, f"--model_dir={model_dir}", "--mode=train", "--train_steps=12",
             "--checkpoint_steps=2", "--keep_checkpoints=10")
    process = subprocess.Popen(testing.train_command(*flags), cwd=testing.REPO_ROOT, env=testing.train_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        killed_at = _wait_for_checkpoint(process, model_dir, timeout=600)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    last = _checkpoint_steps(model_dir)[-1]
    assert killed_at <= last < 12, "the run was killed before it ended"
    saved = tf.train.load_checkpoint(os.path.join(model_dir, checkpoints.CHECKPOINT_DIR, f"ckpt-{last}"))

    # What the restarted run restores: every model and optimizer variable of the checkpoint, the step included.
    # Written out again from the restored objects, the checkpoint must come back tensor for tensor.
    run = loop.Trainer(config_lib.TrainConfig.load(model_dir), flags_text=None)
    assert run.restore().endswith(f"ckpt-{last}")
    assert run.step == last
    momenta = [v for v in run.optimizer.variables if "momentum" in v.path]
    assert momenta and all(np.any(v.numpy() != 0) for v in momenta[:5]), "SGD momenta restored"
    again = tf.train.load_checkpoint(tf.train.Checkpoint(model=run.model, optimizer=run.optimizer).write(
        str(tmp_path / "again" / "ckpt")))
    names = [n for n in saved.get_variable_to_shape_map() if n.startswith(("model/", "optimizer/"))]
    assert len(names) > 100
    for name in names:
        np.testing.assert_array_equal(again.get_tensor(name), saved.get_tensor(name), err_msg=name)

    result = testing.run_train(*flags)
    restored = os.path.join(model_dir, checkpoints.CHECKPOINT_DIR, f"ckpt-{last}")
    assert f"restored {restored} (step {last})" in result.stderr
    assert f"training retinanet-spinenet-mobile-49xs from step {last} to 12" in result.stderr
    assert _checkpoint_steps(model_dir)[-1] == 12
    steps_logged = [line for line in result.stderr.splitlines() if "step " in line and "/12:" in line]
    assert len(steps_logged) == 12 - last, "the resumed run trains only the missing steps"
    # Training seconds per checkpoint, the killed run's and the resumed run's in one rising series.
    times = loop.read_train_times(model_dir)
    assert [record["step"] for record in times] == list(range(2, 13, 2))
    seconds = [record["train_seconds"] for record in times]
    assert 0 < seconds[0] and all(a < b for a, b in zip(seconds, seconds[1:])), seconds


def test_train_times_add_up_across_resumes_and_leave_out_paused_time(tmp_path, caplog):
    model_dir = str(tmp_path)
    clock = loop.TrainTimes(model_dir, start_step=0)
    time.sleep(0.05)
    with clock.paused():  # an evaluation
        time.sleep(0.3)
    clock.record(10)
    clock.record(20)
    first = loop.read_train_times(model_dir)
    assert [record["step"] for record in first] == [10, 20]
    assert 0.05 <= first[0]["train_seconds"] <= first[1]["train_seconds"] < 0.3

    resumed = loop.TrainTimes(model_dir, start_step=10)  # killed after ckpt-10: the record of step 20 goes
    resumed.record(20)
    again = loop.read_train_times(model_dir)
    assert [record["step"] for record in again] == [10, 20]
    assert again[1]["train_seconds"] >= first[0]["train_seconds"]

    unknown = loop.TrainTimes(model_dir, start_step=15)  # no record of the step resumed from
    unknown.record(30)
    assert loop.read_train_times(model_dir)[-1] == {"step": 30, "train_seconds": None}
    assert "no time for step 15" in caplog.text

    loop.TrainTimes(model_dir, start_step=0).record(5)  # a fresh run starts a new file
    assert [record["step"] for record in loop.read_train_times(model_dir)] == [5]


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    # At lr 1e12 the run blows up within a few steps: either the loss turns non-finite, or (seen on 2026-12-02) an
    # update after a finite loss overflows the momentum first. Either way the run stops before saving that step,
    # and every float in the kept checkpoint is finite.
    model_dir = str(tmp_path / "run")
    result = testing.run_train(*testing.TINY_DETECTOR_FLAGS, f"--model_dir={model_dir}", "--mode=train",
                               "--train_steps=30", "--checkpoint_steps=1", "--optimizer=sgd", "--momentum=0.9",
                               "--learning_rate=1e12", check=False)
    assert result.returncode != 0
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, result.stderr[-2000:]
    assert "training stopped, nothing saved; the last good checkpoint is" in error[0]
    bad_step = int(error[0].split(" at step ")[1].split(":")[0])
    steps = _checkpoint_steps(model_dir)
    assert steps and steps[-1] == bad_step - 1
    reader = tf.train.load_checkpoint(os.path.join(model_dir, checkpoints.CHECKPOINT_DIR, f"ckpt-{steps[-1]}"))
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), f"{name} in the kept checkpoint is not finite"


@pytest.mark.slow
def test_mirrored_over_two_cpu_devices_and_batch_divisibility(tmp_path):
    model_dir = str(tmp_path / "run")
    result = testing.run_train(*testing.TINY_DETECTOR_FLAGS, f"--model_dir={model_dir}", "--mode=train_and_eval",
                               "--train_steps=2", "--checkpoint_steps=2", "--strategy=mirrored",
                               "--num_cpu_devices=2", "--batch_size=4")
    assert "global batch 4 on 2 replica(s)" in result.stderr
    assert _checkpoint_steps(model_dir) == [2]
    metrics = json.load(open(os.path.join(model_dir, loop.EVAL_METRICS_FILE)))
    assert metrics[-1]["step"] == 2 and metrics[-1]["num_images"] == 4 and 0.0 <= metrics[-1]["AP"] <= 1.0

    bad = testing.run_train(*testing.TINY_DETECTOR_FLAGS, f"--model_dir={tmp_path / 'bad'}", "--train_steps=2",
                            "--strategy=mirrored", "--num_cpu_devices=2", "--batch_size=3", check=False)
    assert bad.returncode != 0
    assert "error: --batch_size=3: not divisible by the 2 replicas of --strategy=mirrored" in bad.stderr
    assert not _checkpoint_steps(tmp_path / "bad")


@pytest.mark.parametrize("flag, message", [
    ("--image_size=600", "--image_size=600,600: each side must be divisible by 128"),
    ("--model=retinanet-resnet-50", "--model='retinanet-resnet-50': not a detection model"),
    ("--train_data=coco:/nonexistent/instances.json:/nonexistent", "--train_data="),
    ("--no_such_flag=1", "Unknown command line flag 'no_such_flag'"),
])
def test_bad_flags_stop_at_once_with_one_line(tmp_path, flag, message):
    started = time.time()
    result = testing.run_train(*testing.TINY_DETECTOR_FLAGS, f"--model_dir={tmp_path / 'run'}", flag, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run" / checkpoints.CHECKPOINT_DIR).exists()
    assert time.time() - started < 120


def test_resume_refuses_a_different_model(tmp_path):
    config = config_lib.TrainConfig(task="detection", model="retinanet-spinenet-mobile-49xs",
                                    model_dir=str(tmp_path), image_size=(128, 128), num_classes=6,
                                    input=config_lib.InputConfig(train_data="builtin:shapes",
                                                                 eval_data="builtin:shapes:validation"))
    config.save()
    changed = dataclasses.replace(config, image_size=(256, 256))
    with pytest.raises(loop.TrainingError, match=r"image_size: \[128, 128\] -> \[256, 256\]"):
        loop.Trainer(changed, flags_text=None)


@pytest.mark.slow
def test_classification_trains_evaluates_and_eval_mode_rereads_the_checkpoint(tmp_path):
    model_dir = str(tmp_path / "run")
    flags = ("--flagfile=configs/classification_spinenet_mobile_49xs_shapes128.flags", f"--model_dir={model_dir}",
             "--model_overrides=filter_size_scale=0.25,endpoints_num_filters=8", "--train_data=builtin:shapes:train[:8]",
             "--eval_data=builtin:shapes:validation[:6]", "--shuffle_buffer=8", "--batch_size=4",
             "--eval_batch_size=3", "--train_steps=2", "--warmup_steps=1", "--checkpoint_steps=2", "--noprogress_bar")
    testing.run_train(*flags)
    testing.run_train(*flags, "--mode=eval")
    records = json.load(open(os.path.join(model_dir, loop.EVAL_METRICS_FILE)))
    assert [r["step"] for r in records] == [2, 2]
    assert records[0]["num_images"] == 6 and 0.0 <= records[0]["top1"] <= records[0]["top5"] <= 1.0
    # Same weights, same images: the eval-only run scores exactly what the training run scored.
    assert records[1]["top1"] == records[0]["top1"] and records[1]["top5"] == records[0]["top5"]


def _tiny_trainer(model_dir) -> loop.Trainer:
    """A `Trainer` of a narrowed RetinaNet-Mobile-49XS at 128 on the built-in data, built in-process."""
    config = config_lib.TrainConfig(
        task="detection", model="retinanet-spinenet-mobile-49xs", model_dir=str(model_dir), image_size=(128, 128),
        model_overrides={"filter_size_scale": 0.25, "endpoints_num_filters": 8, "num_filters": 8},
        input=config_lib.InputConfig(train_data="builtin:shapes", eval_data="builtin:shapes:validation"))
    return loop.Trainer(config, flags_text=None)


def test_resume_from_an_incomplete_checkpoint_is_refused_in_one_line(tmp_path):
    """A checkpoint that lacks some of the run's objects (here the optimizer, as a weights-only checkpoint dropped into
    model_dir, or one written before list/dict sublayers were checkpointed) stops the run instead of resuming with
    half the state."""
    trainer = _tiny_trainer(tmp_path)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=trainer.model), str(tmp_path / checkpoints.CHECKPOINT_DIR),
                               max_to_keep=1).save(checkpoint_number=7)
    with pytest.raises(loop.TrainingError, match=r"ckpt-7: does not match retinanet_spinenet_mobile_49xs and its "
                                                 r"optimizer: .*; use another --model_dir$"):
        trainer.restore()


def test_a_non_finite_weight_or_slot_is_named_before_anything_is_saved(tmp_path):
    trainer = _tiny_trainer(tmp_path)
    assert trainer.first_non_finite_variable() is None
    slot = next(v for v in trainer.optimizer.variables if tf.as_dtype(v.dtype).is_floating and len(v.shape))
    slot.assign(tf.fill(slot.shape, float("inf")))
    assert trainer.first_non_finite_variable() == slot.path
    slot.assign(tf.zeros(slot.shape))
    weight = trainer.model.trainable_variables[3]
    weight.assign(tf.fill(weight.shape, float("nan")))
    assert trainer.first_non_finite_variable() == weight.path
