"""Tests of `spinenet_tf.cli`: every kind of bad input ends in one stderr line `error: <message>` and exit code 2.

The programs run in subprocesses that load spinenet_tf/cli.py by path, without the package: that keeps each run
quick (absl only, no TensorFlow) and checks that the module imports nothing from spinenet_tf.
"""

import pathlib
import subprocess
import sys

import pytest

from spinenet_tf import cli

_CLI = pathlib.Path(__file__).resolve().parents[1] / "spinenet_tf" / "cli.py"

# A program with one required and one integer flag; --mode picks what main does.
_PROGRAM = f"""
import importlib
import importlib.abc
import importlib.util
from absl import flags

spec = importlib.util.spec_from_file_location("cli", {str(_CLI)!r})
cli = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cli)
assert not [name for name in __import__("sys").modules if name.startswith("spinenet_tf")]

_NAME = flags.DEFINE_string("name", None, "Required.")
_COUNT = flags.DEFINE_integer("count", 1, "An integer.")
_MODE = flags.DEFINE_enum("mode", "ok", ["ok", "value_error", "missing_file", "fail", "bug", "no_litert",
                                         "no_mediapipe_explained", "no_other_module"], "What main does.")


class NotInstalled(importlib.abc.MetaPathFinder):  # refuses a module as the import system does one not installed

    def __init__(self, blocked):
        self.blocked = blocked

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == self.blocked:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


def import_missing(module):
    __import__("sys").meta_path.insert(0, NotInstalled(module.partition(".")[0]))
    importlib.import_module(module)


def main():
    if _MODE.value == "value_error":
        raise ValueError(f"--name={{_NAME.value}}: not a known name")
    if _MODE.value == "missing_file":
        open("/nonexistent/file.json")
    if _MODE.value == "fail":
        cli.fail("first line\\n  second line")
    if _MODE.value == "bug":
        raise KeyError("a bug")
    if _MODE.value == "no_litert":
        import_missing("ai_edge_litert.interpreter")
    if _MODE.value == "no_mediapipe_explained":
        try:
            import_missing("mediapipe.tasks")
        except ModuleNotFoundError:
            raise ModuleNotFoundError('--metadata needs mediapipe: pip install "x[y]"', name="mediapipe") from None
    if _MODE.value == "no_other_module":
        import_missing("some_module_we_never_use")
    print(f"hello {{_NAME.value}} x{{_COUNT.value}}")


flags.mark_flag_as_required("name")
cli.run(main)
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PROGRAM, *args], capture_output=True, text=True, timeout=120)


def test_good_input_runs_main():
    result = _run("--name=a", "--count=3")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello a x3\n", "")


@pytest.mark.parametrize("args, message", [
    (["--name=a", "--mode=value_error"], "--name=a: not a known name"),
    (["--name=a", "--mode=missing_file"], "[Errno 2] No such file or directory: '/nonexistent/file.json'"),
    (["--name=a", "--mode=fail"], "first line second line"),
    (["--name=a", "stray", "words"], "unexpected arguments: stray words"),
    (["--name=a", "--count=many"], "flag --count=many: invalid literal for int() with base 10: 'many'"),
    (["--name=a", "--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    ([], "flag --name=None: Flag --name must have a value other than None."),
    # A missing optional package (cli.OPTIONAL_PACKAGES): Python's message gets the extra that installs it ...
    (["--name=a", "--mode=no_litert"], 'No module named \'ai_edge_litert\': pip install "spinenet_tf[litert]"'),
    # ... and a message of our own (naming the flag and the extra) is kept as it is.
    (["--name=a", "--mode=no_mediapipe_explained"], '--metadata needs mediapipe: pip install "x[y]"'),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    result = _run(*args)
    assert result.returncode == cli.EXIT_BAD_INPUT == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {message}\n"


def test_a_bug_keeps_its_traceback():
    result = _run("--name=a", "--mode=bug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError: 'a bug'" in result.stderr
    assert "error: " not in result.stderr


def test_a_missing_module_that_no_extra_installs_keeps_its_traceback():
    result = _run("--name=a", "--mode=no_other_module")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "ModuleNotFoundError: No module named 'some_module_we_never_use'" in result.stderr


def test_fail_in_process(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.fail(ValueError("--out=x.png: cannot write"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --out=x.png: cannot write\n"
