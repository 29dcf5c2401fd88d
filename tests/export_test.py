"""`python -m spinenet_tf.export`: bad input gives one line naming the flag or file and leaves no file behind;
a full run exports a trained model_dir (slow)."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import spinenet_tf
from spinenet_tf.data import builtin_shapes, builtin_shapes_dataset
from spinenet_tf.serving import exporter, output_path, representative_data
from spinenet_tf.training.config import InputConfig, TrainConfig

_SIZE = (128, 128)
_MODEL = "retinanet-spinenet-mobile-49xs"
_CLASSIFIER = "classifier-spinenet-mobile-49xs"


def _model_dir(path, num_classes: int = 3, checkpoint_classes: int | None = 3, task: str = "detection") -> str:
    """A training-layout model_dir of an untrained detector (or classifier); the checkpoint may be of another head
    size."""
    model_dir = str(path)
    name = _MODEL if task == "detection" else _CLASSIFIER
    TrainConfig(task=task, model=name, model_dir=model_dir, image_size=_SIZE, num_classes=num_classes,
                input=InputConfig(train_data="builtin:shapes:train")).save()
    if checkpoint_classes:
        keras.utils.set_random_seed(0)
        build = spinenet_tf.build_detector if task == "detection" else spinenet_tf.build_classifier
        model = build(name, checkpoint_classes, _SIZE)
        tf.train.CheckpointManager(tf.train.Checkpoint(model=model), os.path.join(model_dir, "checkpoints"),
                                   max_to_keep=1).save()
    return model_dir


def _assert_nothing_written(output) -> None:
    directory, base = os.path.split(str(output))
    assert not os.path.exists(output)
    if os.path.isdir(directory):
        assert not [name for name in os.listdir(directory) if name.startswith(f".{base}.")]


def test_missing_checkpoint(tmp_path):
    model_dir = _model_dir(tmp_path / "run", checkpoint_classes=None)
    output = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match=r"no checkpoint in .*checkpoints$"):
        exporter.export(exporter.ExportConfig(model_dir=model_dir, output=str(output)))
    with pytest.raises(ValueError, match=r"ckpt-7: not a checkpoint"):
        exporter.export(exporter.ExportConfig(checkpoint=os.path.join(model_dir, "checkpoints", "ckpt-7"),
                                              output=str(output)))
    with pytest.raises(ValueError, match=r"^--model_dir=.*train_config.json: no training config"):
        exporter.export(exporter.ExportConfig(model_dir=str(tmp_path), output=str(output)))
    _assert_nothing_written(output)


def test_checkpoint_restores_every_variable_of_the_model(tmp_path):
    # What export reads is what training wrote: the same values for every variable, not a fresh init for some.
    # (Before spinenet_tf/layers/tracking.py, 479 of the 857 were left out: the resampling chains, held in lists.)
    model_dir = _model_dir(tmp_path / "run")
    keras.utils.set_random_seed(0)
    saved = spinenet_tf.build_detector(_MODEL, 3, _SIZE)
    keras.utils.set_random_seed(1)
    restored, _ = exporter.load_model(exporter.ExportConfig(model_dir=model_dir, output=str(tmp_path / "x")))
    differ = [a.path for a, b in zip(saved.variables, restored.variables)
              if a.path != b.path or not np.array_equal(a.numpy(), b.numpy())]
    assert not differ, f"{len(differ)} of {len(saved.variables)} variables not restored, e.g. {differ[:3]}"


def test_checkpoint_of_another_model(tmp_path):
    model_dir = _model_dir(tmp_path / "run", num_classes=3, checkpoint_classes=6)
    output = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match=r"ckpt-1: does not match retinanet_spinenet_mobile_49xs"):
        exporter.export(exporter.ExportConfig(model_dir=model_dir, output=str(output)))
    _assert_nothing_written(output)


def test_flag_errors_before_any_work(tmp_path):
    output = str(tmp_path / "model.tflite")
    cases = {
        "--quantization=int8 needs calibration images: set --representative_data":
            dict(model_dir="x", quantization="int8"),
        "--model_dir / --checkpoint: give exactly one": dict(model_dir="x", checkpoint="y"),
        r"--quantization=fp16 --io_type=float32: only for --format=tflite":
            dict(model_dir="x", format="saved_model", quantization="fp16"),
        r"--io_type=uint8: integer input/output needs --quantization=int8": dict(model_dir="x", io_type="uint8"),
        r"--output=.*missing/model.tflite: the directory .*missing does not exist":
            dict(model_dir="x", output=str(tmp_path / "missing" / "model.tflite")),
        r"--output=.*a_file/model.tflite: .*a_file is not a directory$":
            dict(model_dir="x", output=str(tmp_path / "a_file" / "model.tflite")),
    }
    (tmp_path / "a_file").write_text("")
    for message, kwargs in cases.items():
        with pytest.raises(ValueError, match=message):
            exporter.ExportConfig(**{"output": output, **kwargs}).validate()
    _assert_nothing_written(output)


def test_representative_data_of_the_wrong_kind(tmp_path):
    model_dir = _model_dir(tmp_path / "run")
    output = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match=r"^--representative_data='calibration_images/': unknown data source"):
        exporter.export(exporter.ExportConfig(model_dir=model_dir, quantization="int8", output=str(output),
                                              representative_data="calibration_images/"))
    _assert_nothing_written(output)
    classification = builtin_shapes_dataset.as_classification_dataset("validation", 2, image_size=_SIZE)
    with pytest.raises(ValueError, match=r"^--representative_data=x: has classification examples \(no 'objects'\), "
                                         r"but the model is a detection model$"):
        representative_data.check_examples(classification, "detection", spec="x")
    masks_only = tf.data.Dataset.from_tensors({"mask": tf.zeros([4, 4], tf.uint8)})
    with pytest.raises(ValueError, match=r"examples have no 'image' feature \(got features mask\)"):
        representative_data.check_examples(masks_only, "detection")
    grey = tf.data.Dataset.from_tensors({"image": tf.zeros([4, 4, 1], tf.uint8), "objects": {}})
    with pytest.raises(ValueError, match=r"'image' must be uint8 \[H, W, 3\] RGB, got uint8 \(4, 4, 1\)"):
        representative_data.check_examples(grey, "detection")


def test_detection_data_for_a_classifier_is_refused_before_converting(tmp_path):
    model_dir = _model_dir(tmp_path / "run", task="classification")
    annotations, images = tmp_path / "instances.json", tmp_path / "images"
    annotations.write_text('{"images": [], "annotations": [], "categories": []}')
    images.mkdir()
    output = tmp_path / "classifier.tflite"
    spec = f"coco:{annotations}:{images}"
    with pytest.raises(ValueError, match=rf"^--representative_data='{spec}': COCO annotation files hold detection "
                                         r"data; for classification use"):
        exporter.export(exporter.ExportConfig(model_dir=model_dir, quantization="int8", output=str(output),
                                              representative_data=spec))
    _assert_nothing_written(output)


def test_tflite_output_that_is_a_directory_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"^--output=.*: is a directory, expected a file path$"):
        output_path.write_bytes(b"tflite", str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_tflite_export_to_a_directory_is_refused_before_any_work(tmp_path):
    config = exporter.ExportConfig(model_dir=str(tmp_path / "no_run"), output=str(tmp_path))
    with pytest.raises(ValueError, match=r"^--output=.*: is a directory, expected a file path$"):
        config.validate()


def test_cli_prints_one_line_and_exits_2(tmp_path):
    output = tmp_path / "model.tflite"
    result = subprocess.run([sys.executable, "-m", "spinenet_tf.export", f"--model_dir={tmp_path}",
                             "--quantization=int8", f"--output={output}"], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --quantization=int8 needs calibration images: set --representative_data (e.g. the training data "
        "source)")
    assert "--num_calibration_images" not in result.stderr  # no usage dump
    _assert_nothing_written(output)


@pytest.mark.slow
@pytest.mark.litert
@pytest.mark.xdist_group("detector_fixture")
def test_cli_exports_a_trained_model_dir(tmp_path):
    import export_testing
    from spinenet_tf.litert import interpreter as interpreter_lib
    from spinenet_tf.serving import metadata

    _, model_dir = export_testing.trained_detector()
    output = tmp_path / "detector_int8.tflite"
    subprocess.run([sys.executable, "-m", "spinenet_tf.export", f"--model_dir={model_dir}", "--format=tflite",
                    "--quantization=int8", "--representative_data=builtin:shapes:train[:50]",
                    "--num_calibration_images=50", f"--output={output}"], check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=tmp_path)
    content = output.read_bytes()
    assert metadata.read_associated_files(content)[metadata.LABEL_FILE].decode().split("\n") == \
        list(builtin_shapes.CLASS_NAMES)
    model = interpreter_lib.TFLiteModel(str(output))
    image = builtin_shapes.generate_example(0, "validation", export_testing.IMAGE_SIZE)["image"]
    assert len(model.detect_image(image)["scores"]) > 0
    saved = tmp_path / "saved"
    subprocess.run([sys.executable, "-m", "spinenet_tf.export", f"--model_dir={model_dir}",
                    "--format=saved_model", f"--output={saved}"], check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=tmp_path)
    assert sorted(tf.saved_model.load(str(saved)).signatures) == ["serve_image_bytes", "serving_default"]
