"""The package is layered without loops (docs: DESIGN.md, "Layers").

From the bottom: the foundations (errors, file layout, the model, judges, verification), passes
and targets, the trial and where it runs, the study loop and the answer, the surfaces that read
a finished study (spec, finalize, report, profile, dashboard), the daemon, the CLI. A module
imports only modules of its own layer or below, and no two modules import each other through
any chain. Every import counts: at module level, inside a function, under `TYPE_CHECKING`;
importing `autotune.a.b` also runs `autotune/a/__init__.py`, so it counts as importing
`autotune.a` too.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "autotune"

# module (or package prefix) -> layer; the longest matching prefix decides.
LAYERS = {
    # 0: foundations: errors, the results layout, the model, measuring, judging, verifying
    "autotune.errors": 0,
    "autotune.lazy": 0,
    "autotune.layout": 0,
    "autotune.measure": 0,
    "autotune.metrics": 0,
    "autotune.rules": 0,
    "autotune.ort_logging": 0,
    "autotune.judges": 0,
    "autotune.model": 0,
    "autotune.verify": 0,
    "autotune.calibration": 0,
    "autotune._warmup": 0,
    "autotune.search_spaces": 0,
    # 1: passes (ONNX -> ONNX), the search space, targets
    "autotune.passes": 1,
    "autotune.space": 1,
    "autotune.sweep": 1,
    "autotune.sensitivity": 1,
    "autotune.targets": 1,
    # 2: the trial, and where it runs
    "autotune.trial": 2,
    "autotune.workers": 2,
    # 3: the study loop (ask, run, tell) and the answer
    "autotune.study": 3,
    "autotune.answer": 3,
    # 4: what builds a study from `start`'s options and what reads a study: finalize, report,
    # export, profile, the dashboard
    "autotune.spec": 4,
    "autotune.diagnoses": 4,
    "autotune.profile": 4,
    "autotune.profile_render": 4,
    "autotune.report": 4,
    "autotune.export": 4,
    "autotune.finalize": 4,
    "autotune.dashboard": 4,
    # 5: the daemon; 6: the CLI
    "autotune.daemon": 5,
    "autotune.cli": 6,
}

# Upward imports still to remove: none.
KNOWN_UPWARD: set[tuple[str, str]] = set()

# Function-level imports allowed, by top-level package, each for a stated reason (a comment at the
# import): optional packages a base install lacks (tensorrt, tensorrt_rtx, cuda, modelopt, torch);
# heavy ones only one command uses (optuna_dashboard: `autotune dashboard`; matplotlib and PIL:
# the Pareto plot and image inputs); and Polygraphy in the TensorRT build process, which binds to
# tensorrt or tensorrt_rtx at its first import and so is imported after the flavor is chosen.
LAZY_ALLOWED = {
    "tensorrt", "tensorrt_rtx", "cuda", "modelopt", "torch", "optuna_dashboard", "matplotlib", "PIL", "polygraphy",
}  # fmt: skip
# Issue 28: fewer than 10 function-level imports, each of a package above (261 before issue 28).
MAX_FUNCTION_IMPORTS = 9
# Function-level imports of autotune modules still to hoist: none.
KNOWN_FUNCTION_LEVEL: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> Iterator[tuple[ast.stmt, bool, list[str]]]:
    """Each import statement of module `name`, whether it sits inside a function, and the
    modules it names (a `from x import y` names x.y too when y is a module)."""
    tree = ast.parse(path.read_text(), str(path))

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.stmt, bool, list[str]]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                yield child, in_function, [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    here = here[: len(here) - (child.level - 1)]
                    base = ".".join([*here, base] if base else here)
                yield (
                    child,
                    in_function,
                    [base, *(f"{base}.{a.name}" for a in child.names if f"{base}.{a.name}" in MODULES)],
                )
            else:
                yield from walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    yield from walk(tree, False)


def import_graph() -> dict[str, set[str]]:
    """module -> the autotune modules it imports (and their parent packages)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for _node, _in_function, targets in _imports(name, path):
            for target in targets:
                if not target.startswith("autotune."):
                    continue
                while target not in MODULES:  # `from autotune.x import name`: the module x
                    target = target.rsplit(".", 1)[0]
                parts = target.split(".")
                for end in range(2, len(parts) + 1):  # autotune.a.b runs autotune/a/__init__.py
                    ancestor = ".".join(parts[:end])
                    if ancestor != name and not name.startswith(ancestor + "."):
                        graph[name].add(ancestor)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def layer(module: str) -> int:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module}: no layer declared in tests/test_layers.py LAYERS"
    return LAYERS[max(matches, key=len)]


def test_strongly_connected_finds_a_loop_and_only_that() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert sorted(strongly_connected(graph)) == [["a", "b", "c"], ["d"]]


def test_no_import_loops() -> None:
    loops = [component for component in strongly_connected(import_graph()) if len(component) > 1]
    assert loops == []


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        if module != "autotune":
            layer(module)


def test_no_module_imports_a_layer_above_it() -> None:
    upward = sorted(
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in import_graph().items()
        if module != "autotune"
        for target in targets
        if layer(target) > layer(module) and (module, target) not in KNOWN_UPWARD
    )
    assert upward == []


def test_function_level_imports_are_few() -> None:
    inside = [
        f"{name}:{node.lineno} {targets[0]}"
        for name, path in MODULES.items()
        for node, in_function, targets in _imports(name, path)
        if in_function
    ]
    assert len(inside) <= MAX_FUNCTION_IMPORTS, "\n".join(inside)
    assert [i for i in inside if i.split(" ")[1].split(".")[0] not in LAZY_ALLOWED] == []


def test_no_autotune_module_is_imported_inside_a_function() -> None:
    """An import of one of our modules inside a function hides a dependency (or a loop)."""
    inside = [
        f"{name}:{node.lineno} {targets[0]}"
        for name, path in MODULES.items()
        if name not in KNOWN_FUNCTION_LEVEL
        for node, in_function, targets in _imports(name, path)
        if in_function and targets[0].startswith("autotune")
    ]
    assert inside == []


def test_no_standard_library_module_is_imported_inside_a_function() -> None:
    inside = [
        f"{name}:{node.lineno} {targets[0]}"
        for name, path in MODULES.items()
        for node, in_function, targets in _imports(name, path)
        if in_function and targets[0].split(".")[0] in sys.stdlib_module_names
    ]
    assert inside == []
