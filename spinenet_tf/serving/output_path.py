"""Writing export results so that a failed export leaves nothing at the output path.

Every exporter writes into a temporary sibling of the output (same directory, so the final `os.replace` is an
atomic rename on one file system) and renames it only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator


def check_writable(path: str, flag: str = "--output", directory: bool = False) -> str:
    """Returns the absolute `path` after checking that its directory exists and is writable.

    Args:
        path: The output file, or directory if `directory`.
        flag: The flag named in errors.
        directory: The output is a directory (which may replace an existing one); else a file.

    Raises:
        ValueError: One line naming `flag` and the path when the directory is missing or read-only, or `path` is an
            existing directory that a file export would replace.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ValueError(f"{flag}={path}: {parent} is not a directory")
    if not os.path.isdir(parent):
        raise ValueError(f"{flag}={path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}={path}: the directory {parent} is not writable")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"{flag}={path}: exists and is not writable")
    if not directory and os.path.isdir(path):
        raise ValueError(f"{flag}={path}: is a directory, expected a file path")
    return path


@contextlib.contextmanager
def atomic_output(path: str, directory: bool = False, flag: str = "--output") -> Iterator[str]:
    """Yields a temporary path next to `path`; on success it replaces `path`, on any error it is removed.

    Args:
        path: The final file or directory.
        directory: The export is a directory (SavedModel); otherwise a file (.tflite).
        flag: Named in errors.

    Example:
        with atomic_output("model.tflite") as tmp:
            open(tmp, "wb").write(data)
    """
    path = check_writable(path, flag, directory)
    parent, base = os.path.split(path)
    tmp = tempfile.mkdtemp(prefix=f".{base}.", suffix=".tmp", dir=parent)
    target = tmp if directory else os.path.join(tmp, base)
    try:
        yield target
        if directory and os.path.isdir(path):
            shutil.rmtree(path)
            os.replace(tmp, path)
            tmp = None
        elif directory:
            os.replace(tmp, path)
            tmp = None
        else:
            os.replace(target, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
