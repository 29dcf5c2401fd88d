"""What `pip install .` (no extras) leaves out of a TFLite export: `exporter.check_packages` finds a missing package
of setup.py's "tflite" extra before any TensorFlow work, and the export CLI says so in one line naming the extra.

The missing packages are simulated in the export subprocess by a `sitecustomize` on its PYTHONPATH that puts a
finder first on `sys.meta_path` which refuses the blocked top-level modules, as the import system does for a
package that is not installed (`ModuleNotFoundError: No module named 'mediapipe'`). The run's `model_dir` holds only
`train_config.json`: the check comes before the model is built or a checkpoint read.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys

import pytest

import testing
from spinenet_tf import cli
from spinenet_tf.serving import exporter
from spinenet_tf.training.config import InputConfig, TrainConfig

def _setup_extras() -> dict[str, list[str]]:
    """setup.py's `extras_require`, read from its source (a literal dict)."""
    tree = ast.parse((testing.REPO_ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "extras_require":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no extras_require")


def _requirement_name(requirement: str) -> str:
    """"ai-edge-litert>=2" -> "ai-edge-litert" (PEP 503 normalised)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def _distributions(module: str) -> set[str]:
    """The installed distributions that provide top-level `module` (normalised names)."""
    return {_requirement_name(name) for name in importlib.metadata.packages_distributions().get(module, [])}


def _model_dir(path, task: str = "detection") -> str:
    model = "retinanet-spinenet-mobile-49xs" if task == "detection" else "classifier-spinenet-mobile-49xs"
    TrainConfig(task=task, model=model, model_dir=str(path), image_size=(128, 128), num_classes=3,
                input=InputConfig(train_data="builtin:shapes:train")).save()
    return str(path)


def _export(tmp_path, blocked: str, *flags: str) -> subprocess.CompletedProcess:
    env = testing.env_without(tmp_path, *blocked.split(","))
    return subprocess.run([sys.executable, "-m", "spinenet_tf.export", *flags], cwd=testing.REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_tflite_extra_installs_every_optional_package_of_the_export():
    extras = _setup_extras()
    assert {"tflite", "litert", "dev"} <= set(extras)
    tflite = {_requirement_name(r) for r in extras["tflite"]}
    # The modules check_packages imports, and flatbuffers, which serving/metadata.py uses directly.
    for module in ("mediapipe", "ai_edge_litert", "flatbuffers"):
        provided_by = _distributions(module)
        assert provided_by, f"{module} is not installed here; the dev environment has every extra"
        assert provided_by & tflite, f"{module} ({provided_by}) is not in extras_require['tflite'] {sorted(tflite)}"
    # The CLI's hint for a bare ModuleNotFoundError names an extra that installs that package.
    for module, extra in cli.OPTIONAL_PACKAGES.items():
        assert extra in extras, (module, extra)
        assert _distributions(module) & {_requirement_name(r) for r in extras[extra]}, (module, extra)


def test_check_packages_passes_when_the_extra_is_installed(tmp_path):
    config = exporter.ExportConfig(model_dir=str(tmp_path), output=str(tmp_path / "m.tflite"), quantization="int8",
                                   representative_data="builtin:shapes:train")
    exporter.check_packages(config, "detection")  # mediapipe and ai-edge-litert are dev requirements


def test_tflite_export_without_mediapipe_is_one_line_naming_the_extra(tmp_path):
    model_dir = _model_dir(tmp_path / "run")
    output = tmp_path / "detector.tflite"
    result = _export(tmp_path, "mediapipe", f"--model_dir={model_dir}", "--format=tflite", f"--output={output}")
    assert result.returncode == cli.EXIT_BAD_INPUT == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        'error: --format=tflite with metadata needs mediapipe: pip install "spinenet_tf[tflite]" (or --nometadata)']
    assert "Traceback" not in result.stderr + result.stdout
    assert not output.exists()


def test_int8_export_without_litert_is_one_line_naming_the_extra(tmp_path):
    model_dir = _model_dir(tmp_path / "run")
    result = _export(tmp_path, "ai_edge_litert,mediapipe", f"--model_dir={model_dir}", "--format=tflite",
                     "--quantization=int8", "--representative_data=builtin:shapes:train",
                     f"--output={tmp_path / 'detector_int8.tflite'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        "error: --quantization=int8 (its calibration runs the float model in LiteRT) needs ai_edge_litert: "
        'pip install "spinenet_tf[tflite]"']


@pytest.mark.parametrize("task, flags", [
    pytest.param("detection", ("--nometadata",), id="detector_nometadata"),
    pytest.param("classification", (), id="classifier"),  # no metadata, so no mediapipe
])
def test_tflite_exports_without_metadata_need_no_mediapipe(tmp_path, task, flags):
    # No checkpoint in the model_dir: the run gets as far as restoring one, i.e. past the package check.
    model_dir = _model_dir(tmp_path / "run", task)
    result = _export(tmp_path, "mediapipe", f"--model_dir={model_dir}", "--format=tflite", *flags,
                     f"--output={tmp_path / 'model.tflite'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert re.fullmatch(r"error: .*no checkpoint in .*checkpoints\n", result.stderr), result.stderr[-2000:]
