"""Writing export results so that a failed export leaves nothing at the output path.

The output's directory is checked before any work (`check_writable`, one-line errors naming the flag); then every
exporter writes into a temporary sibling of the output that replaces it only when everything succeeded
(`spinenet_tf.atomic_files`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from spinenet_tf import atomic_files


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
    """`check_writable(path)`, then `atomic_files.atomic_path`: yields a temporary path next to `path`; on success
    it replaces `path`, on any error it is removed.

    Args:
        path: The final file or directory.
        directory: The export is a directory (SavedModel); otherwise a file (.tflite).
        flag: Named in errors.

    Example:
        with atomic_output("model.tflite") as tmp:
            open(tmp, "wb").write(data)
    """
    with atomic_files.atomic_path(check_writable(path, flag, directory), directory) as tmp:
        yield tmp


def write_bytes(content: bytes, path: str, flag: str = "--output") -> str:
    """Writes `content` (e.g. .tflite bytes) atomically: nothing is left at `path` if writing fails; returns the
    absolute path."""
    with atomic_output(path, flag=flag) as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
    return os.path.abspath(path)
