"""The package's import graph runs one way, read from the source (top-level and function-level imports alike).

Layers, lowest first; a module may import its own layer and the layers below it, never one above:

    utilities (layers/, cli, image_size, atomic_files)
    -> backbones -> detection, classification -> models (registry, models, convert, checkpoints, model_stats,
    visualization, and the package's own __init__) -> data -> evaluation -> training -> serving -> litert
    -> search (search spaces and ablations on backbones; the search command runs training trials)
    -> command-line entry points (train, export, demo, summary, draw)

Evaluation sits below training because the training loop evaluates; it depends on data and models only. No module
may sit in an import cycle with another, inside a package or across.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "spinenet_tf"

LAYERS = (
    ("layers", "cli", "image_size", "atomic_files"),
    ("backbones",),
    ("detection", "classification"),
    ("registry", "models", "convert", "checkpoints", "model_stats", "visualization", "__init__"),
    ("data",),
    ("evaluation",),
    ("training",),
    ("serving",),
    ("litert",),
    ("search",),
    ("train", "export", "demo", "summary", "draw"),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
# Packages that must not import each other although they share a layer.
SIBLINGS = {("detection", "classification"), ("classification", "detection")}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    """`spinenet_tf.detection.maskrcnn.model` -> "detection"; the package itself -> "__init__"."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The spinenet_tf modules that `path` imports anywhere in its body, resolved to module names."""
    found = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `from pkg import function` -> pkg
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    return {_module_name(path): _imports(path, modules) - {_module_name(path)} for path in paths}


GRAPH = _graph()


def test_every_package_has_a_layer():
    assert {_part(module) for module in GRAPH} <= set(RANK), set(_part(m) for m in GRAPH) - set(RANK)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every edge of `graph` that goes to a higher layer or to a sibling package."""
    upward = []
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            source_part, target_part = _part(module), _part(target)
            if RANK[target_part] > RANK[source_part] or (source_part, target_part) in SIBLINGS:
                upward.append(f"{module} ({source_part}) imports {target} ({target_part})")
    return upward


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One path per back edge of a depth-first walk: empty exactly when `graph` has no cycle."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles = []

    def visit(module, stack):
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return cycles


def test_no_module_imports_a_higher_layer():
    upward = upward_imports(GRAPH)
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    cycles = import_cycles(GRAPH)
    assert not cycles, "\n".join(cycles)


def test_the_checks_report_what_they_look_for():
    bad = {
        "spinenet_tf.detection.retinanet": {"spinenet_tf.training.optimizers"},
        "spinenet_tf.classification.classifier": {"spinenet_tf.detection.anchors"},
        "spinenet_tf.data.sources": {"spinenet_tf.data.tfrecord_reader"},
        "spinenet_tf.data.tfrecord_reader": {"spinenet_tf.data.sources"},
    }
    assert upward_imports(bad) == [
        "spinenet_tf.classification.classifier (classification) imports spinenet_tf.detection.anchors (detection)",
        "spinenet_tf.detection.retinanet (detection) imports spinenet_tf.training.optimizers (training)",
    ]
    assert import_cycles(bad) == ["spinenet_tf.data.sources -> spinenet_tf.data.tfrecord_reader -> "
                                  "spinenet_tf.data.sources"]
