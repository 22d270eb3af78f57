"""The rooms of the code base (ARCHITECTURE.md) hold: data flows cli → pipelines → videomini only, no module
imports another that (directly or not) imports it back, nothing in pipelines/ reaches back into the facade that
loads it through entry points, and every function fits on a screen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = {"videomini": REPO / "videomini", "videomini.pipelines": REPO / "pipelines", "videomini.cli": REPO / "cli"}
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    """Installed module name → source file, for the three folders (the package-dir mapping of pyproject.toml)."""
    found = {}
    for package, folder in ROOMS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if name.startswith("videomini.") and package == "videomini" and parts and parts[0] in ("pipelines", "cli"):
                continue
            found[name] = path
    return found


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Every project module that `module` imports, at module level or inside a function (lazy imports count)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, set(modules)) for name, path in modules.items()}


def test_the_library_never_imports_pipelines_or_cli(graph):
    inward = {m: sorted(t for t in targets if t.startswith(("videomini.pipelines", "videomini.cli")))
              for m, targets in graph.items() if not m.startswith(("videomini.pipelines", "videomini.cli"))}
    assert {m: t for m, t in inward.items() if t} == {}


def test_pipelines_never_import_the_cli(graph):
    inward = {m: sorted(t for t in targets if t.startswith("videomini.cli"))
              for m, targets in graph.items() if m.startswith("videomini.pipelines")}
    assert {m: t for m, t in inward.items() if t} == {}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    # A package's __init__ re-exporting its own submodules is not a cycle of the data flow: leave out the edges
    # from a package to its children.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_cycles(graph):
    assert _cycles(graph) == []


def _entry_point_loads(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The run-time edges no import statement shows: each module that loads the `videomini.engines` entry points
    (a facade, e.g. videomini.library) → the modules registered there (as installed from pyproject.toml)."""
    from importlib.metadata import entry_points

    targets = {ep.value.split(":")[0] for ep in entry_points(group="videomini.engines")}
    assert targets, "no videomini.engines entry points installed: pip install -e ."
    facades = {name for name, path in _modules().items() if "entry_points(" in path.read_text()}
    return {facade: {t for t in targets if t in graph} for facade in facades}


def test_pipelines_never_import_the_facade_that_loads_them(graph):
    loads = _entry_point_loads(graph)
    assert "videomini.library" in loads
    back = {m: sorted(t for t in targets if t in loads)
            for m, targets in graph.items() if m.startswith("videomini.pipelines")}
    assert {m: t for m, t in back.items() if t} == {}
    with_loads = {m: graph[m] | loads.get(m, set()) for m in graph}
    assert _cycles(with_loads) == []  # nor through anything else: loading an engine never loops back


def test_every_function_fits_on_a_screen():
    long = []
    for folder in ROOMS.values():
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


MAX_LIBRARY_FILE_LINES = 500


def test_every_library_file_holds_one_job():
    """A file under videomini/ over 500 lines does several jobs: split it into a package (as videomini/video/)."""
    over = sorted(f"{path.relative_to(REPO)} ({lines} lines)" for path in (REPO / "videomini").rglob("*.py")
                  if (lines := len(path.read_text().splitlines())) > MAX_LIBRARY_FILE_LINES)
    assert over == []
