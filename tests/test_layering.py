"""The package's layers, read from its imports: every module of `lockfleet` is parsed (ast, nothing
imported), its imports of other lockfleet modules resolved, and the graph checked:

- no module imports another in a cycle (imports under `if TYPE_CHECKING:` name types only and are
  left out; an import inside a function counts: it runs);
- the lower layers (the engine, the event schema, the compiled core, the findings model) import
  nothing from the layers above them or from I/O (server, cli, agent, publishing, store, cluster,
  offline, demo);
- nothing outside the command line imports it (`lockfleet.cli` is the top).

The graph builder is checked on a small package written here, so that a check that finds nothing
is known to be able to find something."""

from __future__ import annotations

import ast
import importlib.machinery
from collections.abc import Iterator
from pathlib import Path

import pytest

import lockfleet

PACKAGE_DIR = Path(lockfleet.__file__).resolve().parent

LOWER = ("lockfleet.engine", "lockfleet.events", "lockfleet._core", "lockfleet._names", "lockfleet.findings")
ABOVE = ("lockfleet.server", "lockfleet.cli", "lockfleet.agent", "lockfleet.publishing", "lockfleet.store",
         "lockfleet.cluster", "lockfleet.offline", "lockfleet.demo")


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _modules(root: Path, package: str) -> dict[str, tuple[Path | None, bool]]:
    """Every module of the package under `root`: dotted name -> (source path or None for a
    compiled module, whether it is a package)."""
    found: dict[str, tuple[Path | None, bool]] = {}
    for path in root.rglob("*.py"):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for path in root.rglob("*" + suffix):
            parts = [package, *path.relative_to(root).parent.parts, path.name[: -len(suffix)]]
            found.setdefault(".".join(parts), (None, False))
    return found


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of a module that run, leaving out `if TYPE_CHECKING:` blocks."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (a `from pkg import name` counts as
    an import of the submodule `pkg.name` when there is one, else of `pkg`)."""
    modules = _modules(root, package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        targets: set[str] = set()
        if path is not None:
            for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    wanted = [a.name for a in node.names]
                else:
                    if node.level:
                        base = name.split(".") if is_pkg else name.split(".")[:-1]
                        base = base[: len(base) - (node.level - 1)]
                        source = ".".join(base + ([node.module] if node.module else []))
                    else:
                        source = node.module or ""
                    wanted = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                              for a in node.names]
                for target in wanted:
                    while target and target not in modules:     # `import a.b.c` imports a, a.b, a.b.c
                        target = target.rpartition(".")[0]
                    if target and target.split(".")[0] == package and target != name:
                        targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE_DIR, "lockfleet")


def test_the_graph_covers_the_package(graph: dict[str, set[str]]) -> None:
    for name in ("lockfleet.engine", "lockfleet._core", "lockfleet.findings.model", "lockfleet.cli",
                 "lockfleet.agent.client.sdk", "lockfleet.server.app", "lockfleet.publishing.outbox"):
        assert name in graph, name
    assert "lockfleet._core" in graph["lockfleet.engine"]
    assert "lockfleet.findings.model" in graph["lockfleet.engine"]


def test_no_module_imports_another_in_a_cycle(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_lower_layers_import_nothing_from_above(graph: dict[str, set[str]]) -> None:
    wrong = sorted(f"{m} -> {t}" for m, targets in graph.items() if _within(m, LOWER)
                   for t in targets if _within(t, ABOVE))
    assert wrong == []


def test_nothing_imports_the_command_line(graph: dict[str, set[str]]) -> None:
    wrong = sorted(f"{m} -> {t}" for m, targets in graph.items() if not _within(m, ("lockfleet.cli",))
                   for t in targets if _within(t, ("lockfleet.cli",)))
    assert wrong == []


def test_the_checker_finds_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "low").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "low" / "__init__.py").write_text("from .a import A\n")
    (root / "low" / "a.py").write_text("from .b import B\nA = 1\n")
    (root / "low" / "b.py").write_text("def f():\n    from . import a\nB = 2\n")          # a <-> b
    (root / "low" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                       "    from .d import D\n")
    (root / "low" / "d.py").write_text("from .c import *\nD = 3\n")                      # typing only
    (root / "top.py").write_text("import pkg.low.a\nfrom pkg.low import c\n")
    (root / "low" / "e.py").write_text("from ..top import x\n")                         # upward
    g = import_graph(root, "pkg")
    assert cycles(g) == [["pkg.low.a", "pkg.low.b"]]
    assert g["pkg.top"] == {"pkg.low.a", "pkg.low.c"}
    assert g["pkg.low.c"] == set()
    assert g["pkg.low.e"] == {"pkg.top"}
