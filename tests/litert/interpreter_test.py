"""Bad input to the LiteRT tools (issue 5): a one-line error naming the file or the shape, fast.

A two-op .tflite with the export's signature layout (`serving_default`, input `image` [1, 8, 8, 3]) stands in for a
detector: the checks under test run before any op does. The trained-model paths are in tflite_detector_test.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import testing
from spinenet_tf.litert import benchmark
from spinenet_tf.litert import evaluate as evaluate_lib
from spinenet_tf.litert import interpreter as interpreter_lib

pytestmark = pytest.mark.litert

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory) -> str:
    """Path of a .tflite whose `serving_default` takes `image` float32 [1, 8, 8, 3] and returns `logits`."""
    module = tf.Module()
    module.serve = tf.function(lambda image: {"logits": tf.reduce_mean(image, axis=[1, 2]) * 2.0},
                               input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32, name="image")])
    saved = str(tmp_path_factory.mktemp("saved"))
    tf.saved_model.save(module, saved, signatures={"serving_default": module.serve.get_concrete_function()})
    content = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"]).convert()
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    path.write_bytes(content)
    return str(path)


def test_runs_an_image_of_the_right_size(tiny_tflite):
    model = interpreter_lib.TFLiteModel(tiny_tflite)
    image = np.random.default_rng(0).uniform(-1, 1, [8, 8, 3]).astype(np.float32)
    np.testing.assert_allclose(model(image)["logits"], 2.0 * image.mean(axis=(0, 1))[None], rtol=1e-5)


@pytest.mark.parametrize("shape", [[1, 6, 8, 3], [8, 8, 1], [2, 8, 8, 3]])
def test_wrong_size_image_is_one_line_naming_both_shapes(tiny_tflite, shape):
    model = interpreter_lib.TFLiteModel(tiny_tflite)
    with pytest.raises(ValueError) as error:
        model(np.zeros(shape, np.float32))
    message = str(error.value)
    expected = [1, *shape] if len(shape) == 3 else shape
    assert message.startswith(f"image of shape {expected}: the model takes [1, 8, 8, 3]")
    assert "\n" not in message


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ValueError, match=r"^.*missing\.tflite: no such \.tflite file$"):
        interpreter_lib.TFLiteModel(str(tmp_path / "missing.tflite"))
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(ValueError, match=r"^not a loadable \.tflite model: ") as error:
        interpreter_lib.TFLiteModel(str(broken))
    assert "\n" not in str(error.value)


def test_evaluate_refuses_a_model_without_the_nms_op(tiny_tflite):
    with pytest.raises(ValueError, match=r"^evaluate needs a detector \.tflite with the NMS op"):
        evaluate_lib.evaluate(interpreter_lib.TFLiteModel(tiny_tflite), [])


def test_benchmark_times_the_model(tiny_tflite):
    result = benchmark.benchmark(tiny_tflite, num_threads=1, warmup=1, runs=3)
    assert result.runs == 3 and result.size_bytes == os.path.getsize(tiny_tflite)
    assert 0 < result.median_ms <= result.p90_ms
    with pytest.raises(ValueError, match=r"^runs=0, warmup=1: need runs >= 1"):
        benchmark.benchmark(tiny_tflite, runs=0, warmup=1)


def test_benchmark_takes_given_inputs_and_names_a_mismatch_in_one_line(tiny_tflite):
    image = np.zeros([1, 8, 8, 3], np.float32)
    assert benchmark.benchmark(tiny_tflite, warmup=0, runs=2, inputs=[image]).runs == 2
    with pytest.raises(ValueError, match=r"^2 inputs given: the model takes 1 \(serving_default_image:0\)$"):
        benchmark.benchmark(tiny_tflite, inputs=[image, image])
    with pytest.raises(ValueError, match=r"^input 0 \(serving_default_image:0\): got float64 \[1, 8, 8, 3\], the "
                                         r"model takes float32 \[1, 8, 8, 3\]$"):
        benchmark.benchmark(tiny_tflite, inputs=[image.astype(np.float64)])


@pytest.mark.parametrize("tool, flags", [("benchmark.py", ["--xnnpack=maybe"]), ("evaluate.py", [])])
def test_cli_prints_one_line_and_exits_2(tiny_tflite, tmp_path, tool, flags):
    missing = tmp_path / "missing.tflite"
    expected = {"benchmark.py": "error: --xnnpack=maybe: give true or false",
                "evaluate.py": f"error: {missing}: no such .tflite file"}[tool]
    model = tiny_tflite if tool == "benchmark.py" else missing
    result = subprocess.run([sys.executable, os.path.join(_ROOT, "tflite", tool), f"--model={model}", *flags],
                            capture_output=True, text=True, cwd=_ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": _ROOT})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == expected
    assert "python tflite/" not in result.stderr  # no usage dump


@pytest.mark.parametrize("tool", ["benchmark.py", "evaluate.py"])
def test_without_litert_the_tools_say_which_extra_to_install(tiny_tflite, tmp_path, tool):
    flags = ["--data=builtin:shapes:validation[:1]"] if tool == "evaluate.py" else []
    result = subprocess.run([sys.executable, os.path.join(_ROOT, "tflite", tool), f"--model={tiny_tflite}", *flags],
                            capture_output=True, text=True, cwd=_ROOT,
                            env=testing.env_without(tmp_path, "ai_edge_litert"), timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "error: No module named 'ai_edge_litert': pip install \"spinenet_tf[litert]\""]
