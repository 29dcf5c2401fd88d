"""Entry point of every `py_test` in BUILD: Bazel runs a test target as a script, so this runs pytest on the
test file the target passes as its argument (with pytest.ini's options and markers).

    bazel test //:backbones_spinenet_test       # -> python tests/pytest_main.py tests/backbones/spinenet_test.py
"""

import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main(["-p", "no:cacheprovider", *sys.argv[1:]]))
