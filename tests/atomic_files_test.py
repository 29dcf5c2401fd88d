"""`spinenet_tf.atomic_files`: a write that fails leaves the old content (or nothing), and no temporary file."""

from __future__ import annotations

import os

import pytest

from spinenet_tf import atomic_files


def test_write_text_creates_the_directory_and_replaces(tmp_path):
    path = tmp_path / "run" / "flags.txt"
    atomic_files.write_text(str(path), "one")
    atomic_files.write_text(str(path), "two")
    assert path.read_text() == "two"
    assert os.listdir(path.parent) == ["flags.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "eval_metrics.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_files.atomic_path(str(path)) as tmp:
            assert os.path.basename(tmp) == "eval_metrics.json"  # the extension is kept
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["eval_metrics.json"]


def test_a_directory_replaces_the_old_one(tmp_path):
    path = tmp_path / "saved"
    path.mkdir()
    (path / "stale.pb").write_text("")
    with atomic_files.atomic_path(str(path), directory=True) as tmp:
        with open(os.path.join(tmp, "saved_model.pb"), "w") as f:
            f.write("new")
    assert os.listdir(path) == ["saved_model.pb"]
    assert os.listdir(tmp_path) == ["saved"]
