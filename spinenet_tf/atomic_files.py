"""Writing a file or directory so that nobody ever sees half of it: a killed or failed write leaves the old
content (or nothing) at the path, never a truncated file.

Everything is written into a temporary sibling of the target (same directory, so the final `os.replace` is a rename
within one file system) and renamed over the target only when the write succeeded. Used for the run files of a
`model_dir` (`train_config.json`, `flags.txt`, `eval_metrics.json`, `train_times.json`) and for exports
(`serving.output_path`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str, directory: bool = False) -> Iterator[str]:
    """Yields a temporary path next to `path`; on success it replaces `path`, on any error it is removed.

    Args:
        path: The final file or directory; its parent directory must exist.
        directory: The target is a directory (e.g. a SavedModel), which replaces an existing one; else a file.

    Example:
        with atomic_path("model.tflite") as tmp:
            open(tmp, "wb").write(data)
    """
    path = os.path.abspath(os.fspath(path))
    parent, base = os.path.split(path)
    tmp = tempfile.mkdtemp(prefix=f".{base}.", suffix=".tmp", dir=parent)
    # A file keeps its base name inside the temporary directory, so writers that check the extension accept it.
    target = tmp if directory else os.path.join(tmp, base)
    try:
        yield target
        if directory:
            if os.path.isdir(path):
                shutil.rmtree(path)
            os.replace(tmp, path)
            tmp = None
        else:
            os.replace(target, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str, text: str) -> str:
    """Writes `text` to `path` atomically, creating its directory if needed; returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    return path
