"""How every command-line program reports bad input: one line `error: <message>` on stderr, exit code 2.

    from spinenet_tf import cli

    def main() -> None:
        ...                      # raise ValueError("--flag=value: what is wrong"), or call cli.fail(...)

    if __name__ == "__main__":
        cli.run(main)

`run` parses the absl flags and calls `main()`. Bad input ends the program with the one line and exit code 2 (the
Unix convention for a usage error, as argparse): a flag absl cannot parse or a required flag left unset, positional
arguments (no program takes any), `absl.app.UsageError`, `fail(message)`, and the exceptions of the types in
`errors` that `main` lets through. Their message names the flag, file or record at fault; there is no usage dump
and no traceback. So does a missing optional package (a `ModuleNotFoundError` for one of `OPTIONAL_PACKAGES`, which
`pip install .` leaves out): the line names the extra of setup.py that installs it, e.g.

    error: --format=tflite with metadata needs mediapipe: pip install "spinenet_tf[tflite]" (or --nometadata)

A message the raising code wrote itself (naming the flag that needs the package and the extra) is printed as is;
Python's bare `No module named 'x'` gets `: pip install "spinenet_tf[EXTRA]"` appended. Any other exception is a
bug and keeps its traceback (a `ModuleNotFoundError` for any other module too).

Used by `python -m spinenet_tf.train` / `export` / `demo` / `summary` / `draw` and `tflite/evaluate.py`,
`tflite/benchmark.py`, `export/export.py`. It imports nothing at import time (absl only inside `run`), so a program
can import it before anything else; library modules never import it, they raise.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

EXIT_BAD_INPUT = 2
DEFAULT_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)
# Top-level modules of the optional packages -> the setup.py extra that installs them. `spinenet_tf[tflite]`
# (export with metadata and int8 calibration) includes LiteRT; `spinenet_tf[litert]` (running .tflite files) has
# only LiteRT.
OPTIONAL_PACKAGES = {"mediapipe": "tflite", "ai_edge_litert": "litert"}


def missing_package_message(error: ModuleNotFoundError) -> str | None:
    """The one-line message for a missing optional package, or None when `error` is about another module."""
    package = (error.name or "").partition(".")[0]
    if package not in OPTIONAL_PACKAGES:
        return None
    message = str(error)
    if message == f"No module named {error.name!r}":  # Python's own message: say what to install
        message += f': pip install "spinenet_tf[{OPTIONAL_PACKAGES[package]}]"'
    return message


def fail(message) -> NoReturn:
    """Prints `error: <message>` to stderr as one line (a multi-line message is joined) and exits with code 2."""
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    sys.stdout.flush()
    print(f"error: {text}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)


def run(main: Callable[[], object], errors: tuple[type[BaseException], ...] = DEFAULT_ERRORS) -> NoReturn:
    """Parses the absl flags of `sys.argv` and runs `main()`, reporting bad input with `fail`.

    Args:
        main: The program, without arguments: it reads its flags' values.
        errors: The exception types that mean bad input (their message names what is wrong).
    """
    from absl import app, flags

    def parse_flags(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            fail(error)

    def run_main(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            main()
        except app.UsageError as error:
            fail(error)
        except errors as error:
            fail(error)
        except ModuleNotFoundError as error:
            message = missing_package_message(error)
            if message is None:
                raise
            fail(message)

    app.run(run_main, flags_parser=parse_flags)
