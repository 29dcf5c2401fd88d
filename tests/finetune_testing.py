"""Users' own data for the fine-tuning tests: COCO folders of JPEG files written by `builtin_shapes_coco`, re-labelled.

`write_coco_parts` writes built-in shapes images as JPEG files plus one COCO instances JSON per part (e.g. a train
and a val part of disjoint images sharing one image folder), optionally with other category ids and names and with
only some of the classes annotated, and returns `coco:ANNOTATIONS.json:IMAGE_DIR` source strings for
`--train_data` / `--eval_data` / `--representative_data`.

The images come from the built-in *validation* split, which the cached detector of `export_testing` (the pretrained
model of these tests) never trained on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Mapping, Sequence

import tensorflow as tf

import testing
from spinenet_tf.data import builtin_shapes, builtin_shapes_coco
from spinenet_tf.detection import matcher


@dataclasses.dataclass(frozen=True)
class CocoPart:
    """One written part: its annotation file, image folder, source string and the COCO dict written."""

    annotation_file: str
    image_dir: str
    coco: dict

    @property
    def spec(self) -> str:
        return f"coco:{self.annotation_file}:{self.image_dir}"

    @property
    def class_names(self) -> list[str]:
        """Names by class index as the COCO reader numbers them (sorted category ids)."""
        return [c["name"] for c in sorted(self.coco["categories"], key=lambda c: c["id"])]


def write_coco_parts(root, parts: Mapping[str, tuple[int, int]], image_size: int = 128,
                     categories: Mapping[int, tuple[int, str]] | None = None) -> dict[str, CocoPart]:
    """Writes JPEG images of the built-in validation split and one COCO JSON per part.

    Args:
        root: Folder to write into (`images/` and `<part>.json`).
        parts: Part name -> [first, end) example indices of the split; parts should not overlap.
        image_size: Square image side.
        categories: Built-in class index -> (category id, name) to write; annotations of classes not in it are
            left out (those shapes stay in the images, unlabelled: background for the new task). None keeps the
            writer's ids 1..6 and names.

    Returns:
        Part name -> `CocoPart`.
    """
    root = str(root)
    image_dir = os.path.join(root, "images")
    total = max(end for _, end in parts.values())
    full = builtin_shapes_coco.write_coco_json("validation", os.path.join(root, "all.json"), image_dir,
                                               num_examples=total, image_size=image_size, image_format="jpeg")
    if categories is None:
        categories = {k: (k + 1, name) for k, name in enumerate(builtin_shapes.CLASS_NAMES)}
    new_id = {k + 1: category_id for k, (category_id, _) in categories.items()}  # writer's id -> ours
    written = {}
    for name, (first, end) in parts.items():
        images = full["images"][first:end]  # the writer lists examples in index order
        ids = {image["id"] for image in images}
        annotations = [dict(a, category_id=new_id[a["category_id"]]) for a in full["annotations"]
                       if a["image_id"] in ids and a["category_id"] in new_id]
        coco = dict(full, images=images, annotations=annotations,
                    categories=[{"id": category_id, "name": label, "supercategory": "shape"}
                                for category_id, label in categories.values()])
        path = os.path.join(root, f"{name}.json")
        with open(path, "w") as f:
            json.dump(coco, f)
        written[name] = CocoPart(path, image_dir, coco)
    return written


def flagfile_values(path) -> dict[str, str]:
    """The `--name=value` lines of a flagfile (comments and bare boolean flags left out)."""
    lines = pathlib.Path(path).read_text().splitlines()
    return dict(line.strip()[2:].split("=", 1) for line in lines if line.startswith("--") and "=" in line)


def scaled_learning_rates(path, batch_size: int) -> tuple[str, str]:
    """A flagfile's `--learning_rate` and `--warmup_learning_rate` flags scaled linearly from its `--batch_size` to
    `batch_size`, as its comments tell users to."""
    values = flagfile_values(path)
    factor = batch_size / int(values["batch_size"])
    return (f"--learning_rate={float(values['learning_rate']) * factor:g}",
            f"--warmup_learning_rate={float(values['warmup_learning_rate']) * factor:g}")


def run_export(*flags: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m spinenet_tf.export` in a subprocess; fails with the tail of its output unless it succeeds."""
    result = subprocess.run([sys.executable, "-m", "spinenet_tf.export", *flags], cwd=testing.REPO_ROOT,
                            env=testing.train_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"export exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def last_eval(model_dir) -> dict:
    """The last evaluation record a training run wrote (`eval_metrics.json`)."""
    with open(os.path.join(str(model_dir), "eval_metrics.json")) as f:
        return json.load(f)[-1]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (ymin, xmin, ymax, xmax) boxes (`matcher.iou_matrix`)."""
    return float(matcher.iou_matrix(tf.constant([a], tf.float32), tf.constant([b], tf.float32))[0, 0])
