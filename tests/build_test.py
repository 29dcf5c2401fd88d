"""Keeps BUILD honest: every module and test file has a target, every listed source exists.

What BUILD must list:
- every `spinenet_tf/**/*.py` in the `srcs` of a py_library (one py_library per package directory);
- every `tests/**/*_test.py` in the `srcs` of a py_test;
- every other `tests/**/*.py` (helpers such as `tests/testing.py`) in some `srcs`; `conftest.py` is pytest-only.

Not required: `bench/`, `export/` and `tflite/` scripts. bench/ runs through `make bench`; export/ and tflite/ are
docs with ~10-line wrappers that are never imported (the library does the work). A target that does list them is still
checked. For every target: `srcs` is an explicit list (no glob), every source exists, the name is unique, and a
local dep (":name") names a target of this file.

BUILD is Starlark, whose call-and-list subset parses as Python, so `ast` reads it; nothing is evaluated.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import pathlib

import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_RULE_KINDS = ("py_library", "py_test", "py_binary")
_PYTEST_MAIN = "tests/pytest_main.py"


@dataclasses.dataclass(frozen=True)
class Rule:
    kind: str
    name: str
    srcs: tuple[str, ...]
    deps: tuple[str, ...]
    line: int
    main: str = ""
    args: tuple[str, ...] = ()


def parse_build(text: str) -> tuple[list[Rule], list[str]]:
    """Returns the py_* rules of a BUILD file and the problems found while reading them."""
    rules, problems = [], []
    for node in ast.parse(text, filename="BUILD").body:
        call = node.value if isinstance(node, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in _RULE_KINDS):
            continue
        args = {keyword.arg: keyword.value for keyword in call.keywords}
        where = f"BUILD:{node.lineno} {call.func.id}"
        if not (isinstance(args.get("name"), ast.Constant) and isinstance(args["name"].value, str)):
            problems.append(f"{where} has no literal name = \"...\"")
            continue
        name = args["name"].value
        lists = {}
        for attr in ("srcs", "deps", "args"):
            try:
                value = ast.literal_eval(args[attr]) if attr in args else []
            except ValueError:
                value = None
            if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
                problems.append(f"{where} {name!r}: {attr} must be an explicit list of strings (no glob)")
                value = []
            lists[attr] = tuple(value)
        main = args["main"].value if isinstance(args.get("main"), ast.Constant) else ""
        rules.append(Rule(call.func.id, name, lists["srcs"], lists["deps"], node.lineno, main, lists["args"]))
    return rules, problems


def suggested_test_name(path: str) -> str:
    """tests/backbones/spinenet_test.py -> backbones_spinenet_test: basenames may repeat across folders."""
    return path.removeprefix("tests/").removesuffix(".py").replace("/", "_")


def check_build(root: pathlib.Path, build_text: str | None = None) -> list[str]:
    """Returns one message per problem, each naming the file or target and what to change in BUILD.

    Args:
        root: The repository root, holding `spinenet_tf/` and `tests/`.
        build_text: BUILD's contents; read from `root / "BUILD"` when None.
    """
    text = (root / "BUILD").read_text() if build_text is None else build_text
    rules, problems = parse_build(text)

    lines_by_name = collections.defaultdict(list)
    for rule in rules:
        lines_by_name[rule.name].append(rule.line)
    for name, lines in sorted(lines_by_name.items()):
        if len(lines) > 1:
            problems.append(f"name {name!r} is used by {len(lines)} targets (BUILD lines {lines}): rename all but one")

    for rule in rules:
        tests = [src for src in rule.srcs if src.endswith("_test.py")]
        if rule.kind == "py_test" and (rule.main != _PYTEST_MAIN
                                       or list(rule.args) != [f"$(rootpath {t})" for t in tests]):
            # Bazel runs a py_test's main as a script; a pytest file run that way executes no test.
            problems.append(f"py_test {rule.name!r} must run pytest: main = \"{_PYTEST_MAIN}\", with it in srcs, "
                            f"and args = [\"$(rootpath {tests[0] if tests else 'tests/..._test.py'})\"]")
        for src in rule.srcs:
            if not (root / src).is_file():
                problems.append(f"{src} is listed in the srcs of {rule.name!r} but does not exist: "
                                "remove it from srcs, or fix the path")
        for dep in rule.deps:
            if dep.startswith(":") and dep[1:] not in lines_by_name:
                problems.append(f"{rule.name!r} depends on {dep}, which is not a target in BUILD")

    listed = {src for rule in rules for src in rule.srcs}
    tested = {src for rule in rules if rule.kind == "py_test" for src in rule.srcs}
    library_of_dir = {str(pathlib.PurePosixPath(src).parent): rule.name
                      for rule in rules if rule.kind == "py_library" for src in rule.srcs}

    for path in sorted(p.relative_to(root).as_posix() for p in root.glob("spinenet_tf/**/*.py")):
        if path in listed:
            continue
        folder = str(pathlib.PurePosixPath(path).parent)
        if folder in library_of_dir:
            problems.append(f"{path} is in no py_library: add it to the srcs of {library_of_dir[folder]!r}")
        else:
            name = folder.removeprefix("spinenet_tf/").replace("/", "_")
            problems.append(f"{path} is in no py_library: add py_library(name = \"{name}\") for {folder}/ "
                            f"with {path} in its srcs, and add \":{name}\" to the deps of the targets that import it")

    for path in sorted(p.relative_to(root).as_posix() for p in root.glob("tests/**/*.py")):
        if path.endswith("_test.py") and path not in tested:
            name = suggested_test_name(path)
            problems.append(f"{path} has no py_test: add py_test(name = \"{name}\", size = \"small\", "
                            f"srcs = [\"{path}\", \"tests/pytest_main.py\"], main = \"tests/pytest_main.py\", "
                            f"args = [\"$(rootpath {path})\"]), with the deps it imports and tags for its pytest "
                            f"markers")
        elif not path.endswith(("_test.py", "conftest.py")) and path not in listed:
            name = suggested_test_name(path)
            problems.append(f"{path} is a test helper in no srcs: add py_library(name = \"{name}\", "
                            f"srcs = [\"{path}\"]) and put \":{name}\" in the deps of the py_tests that import it")
    return problems


def test_build_lists_every_module_and_test():
    problems = check_build(_ROOT)
    assert not problems, "BUILD is out of date:\n  " + "\n  ".join(problems)


def test_checker_reports_a_broken_build(tmp_path):
    for path in ("spinenet_tf/__init__.py", "spinenet_tf/registry.py", "spinenet_tf/layers/blocks.py",
                 "spinenet_tf/detection/anchors.py", "tests/layers/blocks_test.py", "tests/testing.py",
                 "tests/conftest.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    broken = """
py_library(
    name = "spinenet_tf",
    srcs = ["spinenet_tf/__init__.py", "spinenet_tf/gone.py"],
    deps = [":layers", ":missing"],
)

py_library(
    name = "layers",
    srcs = glob(["spinenet_tf/layers/*.py"]),
)

py_test(
    name = "spinenet_tf",
    srcs = ["tests/layers/blocks_test.py"],
)

py_library(
    srcs = ["tests/testing.py"],
)
"""
    problems = "\n".join(check_build(tmp_path, broken))
    expected = [
        "name 'spinenet_tf' is used by 2 targets",
        "spinenet_tf/gone.py is listed in the srcs of 'spinenet_tf' but does not exist",
        "'spinenet_tf' depends on :missing, which is not a target in BUILD",
        "'layers': srcs must be an explicit list of strings (no glob)",
        "has no literal name",
        "spinenet_tf/registry.py is in no py_library: add it to the srcs of 'spinenet_tf'",
        "spinenet_tf/layers/blocks.py is in no py_library",
        "spinenet_tf/detection/anchors.py is in no py_library: add py_library(name = \"detection\")",
        "tests/testing.py is a test helper in no srcs: add py_library(name = \"testing\"",
    ]
    for message in expected:
        assert message in problems, f"expected {message!r} among:\n{problems}"
    assert "conftest.py" not in problems
    assert "blocks_test.py has no py_test" not in problems  # it is in a py_test, though a misnamed one


def test_checker_names_the_missing_py_test(tmp_path):
    for path in ("spinenet_tf/__init__.py", "tests/backbones/spinenet_test.py", "tests/build_test.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    build = """
py_library(
    name = "spinenet_tf",
    srcs = ["spinenet_tf/__init__.py"],
)

py_library(
    name = "not_a_test",
    srcs = ["tests/build_test.py"],
)
"""
    assert check_build(tmp_path, build) == [
        "tests/backbones/spinenet_test.py has no py_test: add py_test(name = \"backbones_spinenet_test\", "
        "size = \"small\", srcs = [\"tests/backbones/spinenet_test.py\", \"tests/pytest_main.py\"], "
        "main = \"tests/pytest_main.py\", args = [\"$(rootpath tests/backbones/spinenet_test.py)\"]), with the deps "
        "it imports and tags for its pytest markers",
        "tests/build_test.py has no py_test: add py_test(name = \"build_test\", size = \"small\", "
        "srcs = [\"tests/build_test.py\", \"tests/pytest_main.py\"], main = \"tests/pytest_main.py\", "
        "args = [\"$(rootpath tests/build_test.py)\"]), with the deps it imports and tags for its pytest markers",
    ]


def test_checker_accepts_a_complete_build(tmp_path):
    for path in ("spinenet_tf/__init__.py", "tests/build_test.py", "tests/pytest_main.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    build = """
load("@rules_python//python:defs.bzl", "py_library", "py_test")

py_library(
    name = "spinenet_tf",
    srcs = ["spinenet_tf/__init__.py"],
)

py_test(
    name = "build_test",
    size = "small",
    srcs = [
        "tests/build_test.py",
        "tests/pytest_main.py",
    ],
    args = ["$(rootpath tests/build_test.py)"],
    main = "tests/pytest_main.py",
    data = ["BUILD"] + glob(["spinenet_tf/**/*.py"]),
    deps = [":spinenet_tf"],
)
"""
    assert check_build(tmp_path, build) == []
    # The same target run as a plain script would execute no test: reported.
    script_build = build.replace('main = "tests/pytest_main.py",', 'main = "tests/build_test.py",')
    assert check_build(tmp_path, script_build) == [
        'py_test \'build_test\' must run pytest: main = "tests/pytest_main.py", with it in srcs, and '
        'args = ["$(rootpath tests/build_test.py)"]']
