"""Every flagfile in configs/ parses with the real `spinenet_tf.train` flags, validates, and builds its model and
input pipeline on tiny inputs (128x128, the built-in data standing in for COCO / ImageNet / iNaturalist)."""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib

import pytest

import testing
from spinenet_tf import registry
from spinenet_tf.data import sources
from spinenet_tf.training import config as config_lib
from spinenet_tf.training import tasks

# The training recipes; configs/search_*.flags are flagfiles of `python -m spinenet_tf.search`, which
# tests/search/main_test.py runs.
CONFIGS = sorted(path for path in (testing.REPO_ROOT / "configs").glob("*.flags") if not path.name.startswith("search_"))


def _parse(path: pathlib.Path) -> config_lib.TrainConfig:
    return testing.train_config(f"--flagfile={path}", "--model_dir=/tmp/unused")


def _distinct_models(paths: list[pathlib.Path]) -> list[pathlib.Path]:
    """The first flagfile of each (task, model, model overrides): recipes that differ only in data, schedule or
    optimizer build the same network, which one build covers (all of them parse and validate above)."""
    seen, kept = set(), []
    for path in paths:
        config = _parse(path)
        key = (config.task, config.model, tuple(sorted((k, str(v)) for k, v in config.model_overrides.items())))
        if key not in seen:
            seen.add(key)
            kept.append(path)
    return kept


# Building the full-size models takes 10-60 s each on 2 cores: the default run builds the mobile-49XS recipes
# (the demo's among them), `make test-slow` every other distinct one.
BUILDS = [pytest.param(path, marks=() if "mobile_49xs" in path.stem else pytest.mark.slow)
          for path in _distinct_models(CONFIGS)]


def test_there_is_a_flagfile_for_every_recipe():
    names = {path.stem for path in CONFIGS}
    for detector in registry.DETECTORS:  # RetinaNet recipes on COCO for every registry detector
        assert any(name.startswith(f"detection_{detector.replace('-', '_')}_coco") for name in names), detector
    for size in ("49", "96", "143"):
        for data in ("imagenet", "inat"):
            assert f"classification_spinenet_{size}_{data}256" in names
            assert f"classification_spinenet_{size}_{data}256_improved" in names
    for detector, spec in registry.MASKRCNN_DETECTORS.items():  # Mask R-CNN recipes at the paper's resolutions
        assert f"instance_segmentation_{detector.replace('-', '_')}_coco{spec.image_size}" in names, detector
    assert any("shapes" in name for name in names), "a demo flagfile on the built-in data"
    assert any(name.startswith("instance_segmentation") and "shapes" in name for name in names)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_flagfile_parses_and_validates(path):
    config = _parse(path).validate()
    stem = path.stem
    assert stem.startswith(config.task), "file names start with the task"
    model = config.model.removeprefix("classifier-") if config.task == "classification" else config.model
    assert model.replace("-", "_") in stem
    assert f"{config.image_size[0]}" in stem, "file names end with the resolution"
    for spec, flag in ((config.input.train_data, "--train_data"), (config.input.eval_data, "--eval_data")):
        if spec.startswith("coco:") and not os.path.exists(spec.split(":")[1]):
            # COCO JSON recipes name the user's copy of the annotations: the spec's form parses, the file is absent.
            with pytest.raises(ValueError, match=f"{flag}=.*annotation file .* does not exist"):
                sources.parse(spec, flag=flag)
            continue
        assert sources.parse(spec, flag=flag).spec == spec
    if config.task == "classification" and stem.endswith("_improved"):
        # The paper's improved protocol (§5.5): stochastic depth, swish, label smoothing 0.1.
        assert config.model_overrides["stochastic_depth_rate"] == 0.2
        assert config.model_overrides["activation"] == "swish"
        assert config.model_overrides["label_smoothing"] == 0.1


@functools.cache
def _tiny_task(path: pathlib.Path):
    config = _parse(path)
    builtin = "builtin:shapes:train[:2]"
    classes = 7 if config.task == "instance_segmentation" else 6  # the 6 shapes (+ Mask R-CNN's background)
    config = dataclasses.replace(
        config, image_size=(128, 128), batch_size=2, num_classes=min(config.num_classes, classes) or classes,
        input=dataclasses.replace(config.input, train_data=builtin, eval_data="builtin:shapes:validation[:2]",
                                  shuffle_buffer=2),
        runtime=dataclasses.replace(config.runtime, strategy="default", mixed_precision="none"))
    return tasks.make_task(config.validate())


@pytest.mark.parametrize("path", BUILDS, ids=lambda p: p.stem)
def test_flagfile_builds_its_model_and_input_pipeline(path):
    task = _tiny_task(path)
    model = task.build_model(task.config.num_classes)
    images, labels = next(iter(task.train_dataset()))
    assert tuple(images.shape) == (2, 128, 128, 3)
    terms = task.losses(model, images, labels, training=False)
    assert float(terms["loss"]) > 0
