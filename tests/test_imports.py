"""The layout shows the data flow, and stays that way: read from the source with `ast`, every import between dermlib's
modules (at module level or inside a function) runs down the pipeline (data -> notes -> train -> evaluate -> report,
each step above the modules every step shares), and no two modules import each other, directly or round a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dermlib"
STEPS = ("data", "notes", "train", "evaluate", "report")  # pipeline order: a step imports only earlier ones
# packages that are not pipeline steps (no notebook), each placed after the step it builds on: `predict` (use a trained
# model) builds the model of `train` and preprocesses as `data`; `evaluate`'s export writes its model folders
BESIDE = {"predict": "train"}
LAYERS = tuple(name for step in STEPS for name in (step, *[b for b, after in BESIDE.items() if after == step]))
# every step may use these
SHARED = {"config", "config_checks", "redact", "grammar", "workdir", "metrics", "plotstyle", "progress", "notebook",
          "logs", "atomic"}
TOP = {"pipeline", "cli"}  # run the notebooks or any step's command: above every step
DEPRECATED = {"embed", "export", "findings"}  # one-line shims keeping old `python -m dermlib.<x>` names working


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported dermlib module, line, inside a function) of every import in one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nested = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn) if node is not fn}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dermlib":
            names = [f"{node.module}.{a.name}" for a in node.names]
            targets = [n if n in MODULES else node.module for n in names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.split(".")[0] == "dermlib"]
        else:
            continue
        found += [(target, node.lineno, id(node) in nested) for target in dict.fromkeys(targets)]
    return found


def layer(module: str) -> int:
    """0 shared, 1..6 the steps in pipeline order with `predict` after `train`, 7 the pipeline and the shims."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return 1 + LAYERS.index(parts[1])
    if len(parts) > 1 and parts[1] in TOP | DEPRECATED:
        return len(LAYERS) + 1
    return 0


EDGES = [(module, target, line, nested) for module, path in MODULES.items() for target, line, nested in imports(path)
         if target != module]


def test_every_module_has_a_place():
    """Only the shared modules, the pipeline and the deprecated shims live at the top of the package."""
    top = {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    assert top == SHARED | TOP | DEPRECATED
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(STEPS) | set(BESIDE)


def test_imports_run_down_the_pipeline():
    upward = [f"{module} (line {line}{', in a function' if nested else ''}) imports {target}"
              for module, target, line, nested in EDGES if layer(target) > layer(module)]
    assert not upward, "imports that run back up the pipeline:\n" + "\n".join(upward)


def test_no_import_cycles():
    """Counting imports inside functions too: none of them may hide a circle."""
    graph: dict[str, set[str]] = {}
    for module, target, _, _ in EDGES:
        graph.setdefault(module, set()).add(target)
    cycles: list[str] = []
    state: dict[str, str] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("source, expected", [
    ("from dermlib.train import grid\n", [("dermlib.train.grid", 1, False)]),
    ("def f():\n    from dermlib.config import IMG\n", [("dermlib.config", 2, True)]),
    ("import dermlib.metrics\nimport os\n", [("dermlib.metrics", 1, False)]),
])
def test_the_reader_of_imports(tmp_path, source, expected):
    """The checks above are only as good as this reader: module imports, names from a module, nested imports."""
    path = tmp_path / "m.py"
    path.write_text(source)
    assert imports(path) == expected


def test_an_upward_import_is_caught():
    """A data module importing the evaluation step is reported (the check can fail)."""
    assert layer("dermlib.evaluate.grid") > layer("dermlib.data.sources")
    assert layer("dermlib.config") == 0 and layer("dermlib.pipeline") > layer("dermlib.report.tables")
    assert layer("dermlib.train.model") < layer("dermlib.predict.hub") < layer("dermlib.evaluate.export")
