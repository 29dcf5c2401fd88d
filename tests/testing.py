"""The shared test harness (modelled on keras-hub's `test_case.py`).

How to import it: `tests/conftest.py` puts `tests/` first on `sys.path`, so every test file writes

    import testing

This works in every pytest import mode (`prepend`, `append`, `importlib`) and from any working directory, with no
`__init__.py` files under `tests/` (so test basenames may repeat across sub-folders under `--import-mode=importlib`).

What it offers:
    run_layer_test(cls, init_kwargs, input_shape, expected_output_shape, ...)
        config round trip (JSON-equal), `build`, symbolic call, eager call, one `fit` step.
    assert_keras_round_trip(model, x, tmp_path)
        `.keras` save/load: same class, same output structure including dict key types, allclose outputs.
    assert_same_structure(expected, actual)
        the nesting check used by the round trip, usable on its own.
    walk_layers(layer)
        every layer nested inside `layer` (blocks inside a model, convs and batch norms inside a block).
    run_train(*flags) / train_command / train_env, TINY_DETECTOR_FLAGS
        `python -m spinenet_tf.train` in a subprocess, and the flags of a tiny detector run on the built-in data.
    slow_unless(names, fast)
        parametrize values where only the `fast` ones run in `make test`: the big variants go to `make test-slow`.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np
import pytest


# The variants whose Model Garden parity tests take seconds, not a minute, on 2 cores: they run in `make test`;
# SpineNet-96/143/143L/190 (same code paths, more blocks) run in `make test-slow` to keep CI near 15 minutes.
FAST_VARIANTS = ("49s", "49", "mobile-49xs", "mobile-49s", "mobile-49")


def slow_unless(values: Sequence, fast: Sequence[str] = FAST_VARIANTS, key=lambda value: value) -> list:
    """`pytest.param`s of `values`, marked slow unless the variant of `key(value)` (what follows "spinenet-" in
    "retinanet-spinenet-mobile-49s") is one of `fast`."""
    def is_fast(value) -> bool:
        return key(value).partition("spinenet-")[2] in fast
    return [pytest.param(*(value if isinstance(value, tuple) else (value,)),
                         marks=() if is_fast(value) else pytest.mark.slow) for value in values]


def _to_numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _json(config: dict) -> str:
    """The canonical JSON text of a config; fails if the config is not JSON-serializable."""
    return json.dumps(config, sort_keys=True)


def walk_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Yields every layer nested in `layer`, depth first, not `layer` itself.

    Uses Keras' `Layer._flatten_layers`, the one private Keras API the harness relies on (Keras 3 has no public
    recursive iterator; `Model.layers` stops at the top level). Keep it in this one place.
    """
    yield from layer._flatten_layers(include_self=False, recursive=True)


def assert_same_structure(expected, actual, path: str = "outputs") -> None:
    """Same nesting, same container types, same dict keys *with the same key types*, same tensor shapes."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected a dict, got {type(actual).__name__}"
        expected_keys = sorted(((type(k).__name__, k) for k in expected), key=repr)
        actual_keys = sorted(((type(k).__name__, k) for k in actual), key=repr)
        assert actual_keys == expected_keys, f"{path}: dict keys (type, key) differ: {actual_keys} != {expected_keys}"
        for key in expected:
            assert_same_structure(expected[key], actual[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected), (
            f"{path}: expected a {type(expected).__name__}, got {type(actual).__name__}")
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same_structure(e, a, f"{path}[{i}]")
    else:
        assert not isinstance(actual, (dict, list, tuple)), f"{path}: expected a tensor, got {type(actual).__name__}"
        assert tuple(actual.shape) == tuple(expected.shape), f"{path}: shape {actual.shape} != {expected.shape}"


def run_layer_test(cls: type, init_kwargs: dict, input_shape: Sequence[int], expected_output_shape: Sequence[int],
                   expected_num_trainable_weights: int | None = None,
                   expected_num_non_trainable_weights: int | None = None, seed: int = 0) -> None:
    """The checks every layer passes.

    1. Config round trip: `get_config()` is JSON-serializable, holds every constructor argument, and
       `from_config(get_config())` (also through `keras.saving.serialize_keras_object`) gives a JSON-equal config.
    2. Build: `layer.build(input_shape)` creates every weight (a later call creates none), with the expected counts.
    3. Symbolic call: on a `keras.Input` with a fixed and with an unknown batch size; agrees with
       `compute_output_shape`.
    4. Eager call: on random data, the expected shape and finite values.
    5. One `fit` step of a tiny functional model wrapping the layer: finite loss, trainable weights move, and every
       non-trainable weight (batch-norm statistics) moves too, i.e. `training=True` reached every nested layer.

    Args:
        cls: The layer class.
        init_kwargs: Constructor arguments.
        input_shape: Full input shape, batch included, e.g. (2, 8, 8, 16).
        expected_output_shape: Full output shape, batch included.
        expected_num_trainable_weights, expected_num_non_trainable_weights: Weight-tensor counts, if given.
        seed: Seed of the random data and of Keras' initializers.
    """
    input_shape = tuple(input_shape)
    expected_output_shape = tuple(expected_output_shape)
    keras.utils.set_random_seed(seed)

    # 1. Config round trip.
    layer = cls(**init_kwargs)
    config = layer.get_config()
    config_json = _json(config)
    for key, value in init_kwargs.items():
        assert key in config, f"{cls.__name__}.get_config() lacks constructor argument {key!r}"
        assert json.loads(_json({key: config[key]})) == json.loads(_json({key: value})), (
            f"{cls.__name__}.get_config()[{key!r}] = {config[key]!r}, constructed with {value!r}")
    revived = cls.from_config(json.loads(config_json))
    assert _json(revived.get_config()) == config_json, f"{cls.__name__}: from_config(get_config()) changes the config"
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    deserialized = keras.saving.deserialize_keras_object(serialized)
    assert type(deserialized) is cls, f"deserialize_keras_object gave {type(deserialized).__name__}, not {cls.__name__}"
    assert _json(deserialized.get_config()) == config_json

    # 2. Build.
    layer = cls(**init_kwargs)
    layer.build(input_shape)
    assert layer.built
    num_weights = len(layer.weights)
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights, (
            f"{cls.__name__}: {len(layer.trainable_weights)} trainable weights, "
            f"expected {expected_num_trainable_weights}")
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights, (
            f"{cls.__name__}: {len(layer.non_trainable_weights)} non-trainable weights, "
            f"expected {expected_num_non_trainable_weights}")
    assert tuple(layer.compute_output_shape(input_shape)) == expected_output_shape

    # 3. Symbolic call.
    symbolic = layer(keras.Input(batch_shape=input_shape))
    assert tuple(symbolic.shape) == expected_output_shape, f"symbolic output {symbolic.shape}"
    symbolic = layer(keras.Input(shape=input_shape[1:]))
    assert tuple(symbolic.shape) == (None,) + expected_output_shape[1:], f"symbolic output {symbolic.shape}"
    assert len(layer.weights) == num_weights, f"{cls.__name__}: calling created weights that build() did not"

    # 4. Eager call.
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(input_shape).astype("float32")
    y = _to_numpy(layer(x))
    assert y.shape == expected_output_shape, f"eager output {y.shape}"
    assert np.all(np.isfinite(y))
    assert len(layer.weights) == num_weights

    # 5. One fit step.
    layer = cls.from_config(config)
    inputs = keras.Input(shape=input_shape[1:])
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    trainable_before = [_to_numpy(w) for w in layer.trainable_weights]
    non_trainable_before = [_to_numpy(w) for w in layer.non_trainable_weights]
    target = rng.standard_normal(expected_output_shape).astype("float32")
    with warnings.catch_warnings():  # layers without weights (up-sampling, drop-path) train nothing, on purpose
        warnings.filterwarnings("ignore", message="The model does not have any trainable weights")
        history = model.fit(x, target, batch_size=input_shape[0], epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    if layer.trainable_weights:
        moved = [not np.array_equal(before, _to_numpy(w))
                 for before, w in zip(trainable_before, layer.trainable_weights)]
        assert any(moved), f"{cls.__name__}: no trainable weight changed in a fit step"
    for before, w in zip(non_trainable_before, layer.non_trainable_weights):
        assert not np.array_equal(before, _to_numpy(w)), (
            f"{cls.__name__}: non-trainable weight {w.path} did not change in a fit step (training flag lost?)")


def assert_keras_round_trip(model: keras.Model, x, tmp_path: pathlib.Path, atol: float = 1e-6) -> keras.Model:
    """`.keras` save and load give the same class, config, output structure (dict key types too) and outputs.

    Outputs are compared in inference mode at `atol` (and the same relative tolerance). Returns the loaded model.
    """
    expected = model(x, training=False)
    path = pathlib.Path(tmp_path) / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model), f"loaded a {type(loaded).__name__}, saved a {type(model).__name__}"
    assert _json(loaded.get_config()) == _json(model.get_config()), "the config changed in the round trip"
    assert len(loaded.weights) == len(model.weights)
    actual = loaded(x, training=False)
    assert_same_structure(expected, actual)
    for e, a in zip(keras.tree.flatten(expected), keras.tree.flatten(actual)):
        np.testing.assert_allclose(_to_numpy(a), _to_numpy(e), atol=atol, rtol=atol)
    return loaded


# --- drawn scenes for learning tests ------------------------------------------------------------------------------

SHAPE_COLOURS = ((220, 40, 40), (40, 200, 60), (50, 80, 230))  # rectangle, ellipse, triangle = classes 0, 1, 2
_MEAN = 255.0 * np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet statistics, as Model Garden normalises
_STD = 255.0 * np.array([0.229, 0.224, 0.225], np.float32)


def draw_shape(draw, cls: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """Draws a filled shape of class `cls` (PIL ImageDraw) covering pixels [y0, y0 + h) x [x0, x0 + w); returns
    its box [ymin, xmin, ymax, xmax] in pixels (PIL's corner coordinates are inclusive, boxes are not)."""
    x1, y1 = x0 + w - 1, y0 + h - 1
    if cls == 0:
        draw.rectangle([x0, y0, x1, y1], fill=SHAPE_COLOURS[cls])
    elif cls == 1:
        draw.ellipse([x0, y0, x1, y1], fill=SHAPE_COLOURS[cls])
    else:
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=SHAPE_COLOURS[cls])
    return np.array([y0, x0, y0 + h, x0 + w], np.float32)


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 RGB -> (x - mean) / std with ImageNet statistics, float32."""
    return ((images.astype(np.float32) - _MEAN) / _STD).astype(np.float32)


# === The training CLI in a subprocess ===
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTS_DIR = REPO_ROOT / "tests"

# A RetinaNet SpineNet-Mobile-49XS shrunk for tests (registry model with shrinking overrides, which keeps test-only
# models out of the registry), 128x128.
TINY_DETECTOR_FLAGS = (
    "--task=detection", "--model=retinanet-spinenet-mobile-49xs", "--image_size=128",
    "--model_overrides=filter_size_scale=0.25,endpoints_num_filters=8,num_filters=8",
    "--train_data=builtin:shapes:train[:16]", "--eval_data=builtin:shapes:validation[:4]", "--cache",
    "--batch_size=2", "--eval_batch_size=2", "--shuffle_buffer=16", "--optimizer=sgd", "--learning_rate=0.01",
    "--lr_schedule=constant", "--log_steps=1",
)


def train_command(*flags: str) -> list[str]:
    """`python -m spinenet_tf.train` with `flags`, as a subprocess argument list."""
    return [sys.executable, "-m", "spinenet_tf.train", *flags]


def train_config(*flags: str):
    """The `TrainConfig` that `python -m spinenet_tf.train` builds from `flags` (not validated), parsed in this process;
    the flags are unparsed again afterwards."""
    from absl import flags as absl_flags

    from spinenet_tf import train

    try:
        absl_flags.FLAGS(["train", *flags])
        return train.config_from_flags()
    finally:
        absl_flags.FLAGS.unparse_flags()


def train_env(**extra: str) -> dict:
    """The environment for a training subprocess: quiet TensorFlow, this checkout first on the path."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO_ROOT))
    env.pop("TF_CONFIG", None)  # a stray cluster spec would make a test run try to join it
    env.update(extra)
    return env


def children(pid: int) -> list[int]:
    """The child processes of process `pid` (Linux)."""
    return [int(child) for child in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def process_running(pid: int) -> bool:
    """Whether process `pid` runs: it exists and is not a zombie. A child orphaned by killing its parent is
    reparented to PID 1 and, once it has exited, stays a zombie until PID 1 reaps it, which a container's PID 1 may
    never do."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"  # the state follows "pid (comm) "


def wait_until(condition: Callable[[], object], timeout: float, poll: float = 0.1) -> None:
    """Calls `condition` every `poll` seconds until it returns something true or `timeout` seconds have passed; the
    caller checks what it waited for (a timeout is not an error here)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(poll)


def still_running_after(pids: Sequence[int], timeout: float) -> list[int]:
    """Those of `pids` still running (`process_running`) once all have ended or `timeout` seconds have passed."""
    wait_until(lambda: not any(map(process_running, pids)), timeout)
    return [pid for pid in pids if process_running(pid)]


# A `sitecustomize` that makes the top-level modules named in $BLOCKED_MODULES (comma-separated) fail to import, as
# they do where a package is not installed: a finder first on `sys.meta_path` refuses them.
_BLOCKER = '''
import importlib.abc
import os
import sys

_BLOCKED = set(filter(None, os.environ.get("BLOCKED_MODULES", "").split(",")))


class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
'''


def env_without(tmp_path: pathlib.Path, *modules: str) -> dict:
    """`train_env` for a subprocess in which the top-level `modules` are not installed (`pip install .` without an
    extra), through a `sitecustomize` under `tmp_path`."""
    shim = tmp_path / "not_installed"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(_BLOCKER)
    return train_env(PYTHONPATH=f"{shim}{os.pathsep}{REPO_ROOT}", BLOCKED_MODULES=",".join(modules))


def run_train(*flags: str, timeout: float = 600, check: bool = True, **env) -> subprocess.CompletedProcess:
    """Runs the training CLI to completion; on an unexpected exit code fails with the tail of its output."""
    result = subprocess.run(train_command(*flags), cwd=REPO_ROOT, env=train_env(**env), capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"train exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


# Parameter counts do not depend on the input size; 128 = 2**max_level is the smallest legal one.
PARAMS_SIZE = 128


@functools.cache
def detector_params(name: str, num_classes: int = 91) -> int:
    """Trainable parameters of `build_detector(name, num_classes)`; cached because a file's oracle and paper tests
    share rows, and the model freed afterwards."""
    import gc

    import spinenet_tf
    from spinenet_tf.model_stats import count_params

    model = spinenet_tf.build_detector(name, num_classes=num_classes, input_shape=(PARAMS_SIZE, PARAMS_SIZE))
    params = count_params(model)
    del model
    keras.backend.clear_session()
    gc.collect()
    return params


def detector_flops(name: str, size: int, num_classes: int = 91) -> int:
    """Multiply-adds of `build_detector(name, num_classes)` at `size` x `size`; frees the model afterwards (the big
    detectors hold gigabytes of graph)."""
    import gc

    import spinenet_tf
    from spinenet_tf.model_stats import count_flops

    model = spinenet_tf.build_detector(name, num_classes=num_classes, input_shape=(size, size))
    flops = count_flops(model, (size, size, 3))
    del model
    keras.backend.clear_session()
    gc.collect()
    return flops
