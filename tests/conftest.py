"""pytest setup shared by every test file.

- Puts `tests/` first on `sys.path`, so test files import the shared harness as `import testing`, whatever pytest's
  import mode (pytest.ini uses `importlib`; `prepend` and `append` work too) and wherever pytest is started from.
  `tests/` has no `__init__.py`, and a namespace package `tests` could be shadowed by any installed distribution
  that ships a regular `tests` package, so the harness is not imported as `from tests import testing`. The repo
  root goes second, so `spinenet_tf` imports from the working tree even without `pip install -e .`.
- Quiets TensorFlow's C++ logging unless the caller chose a level.

Markers (slow, oracle, litert, multiworker) are registered in pytest.ini and described in tests/README.md.
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_TESTS = pathlib.Path(__file__).resolve().parent
for _path in (str(_TESTS.parent), str(_TESTS)):  # inserted in this order, so tests/ ends up first
    if _path in sys.path:
        sys.path.remove(_path)
    sys.path.insert(0, _path)
