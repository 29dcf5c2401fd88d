"""README.md's quick start runs as written: the first ```python block under "## Quick start" is executed unchanged,
so an example that uses an undefined name, an old signature or a removed module fails here."""

import pathlib
import re

import keras
import numpy as np

_README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def quick_start_code(text: str) -> str:
    """The first ```python block of the "## Quick start" section (up to the next "## " heading)."""
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, 'README.md has no "## Quick start" section'
    block = re.search(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)
    assert block, 'README.md\'s "## Quick start" section has no ```python block'
    return block.group(1)


def test_quick_start_runs_as_written():
    code = quick_start_code(_README.read_text(encoding="utf-8"))
    keras.utils.set_random_seed(0)
    namespace = {"__name__": "readme_quick_start"}
    exec(compile(code, f"{_README}:Quick start", "exec"), namespace)  # noqa: S102 (our own README)

    # What its comments promise.
    assert sorted(namespace["features"]) == [3, 4, 5, 6, 7]
    assert all(f.shape[-1] == 256 for f in namespace["features"].values())
    detections = namespace["detections"]
    assert {"boxes", "scores", "classes", "num_detections"} <= set(detections)
    assert np.asarray(detections["boxes"]).shape[:1] == (2,)
    assert np.all(np.asarray(namespace["targets"]["positive"]).sum(axis=1) > 0)  # every image's box has anchors
    assert namespace["classifier"].num_classes == 1000
