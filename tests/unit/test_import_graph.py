"""The first-party packages import each other without circles.

A circle (a imports b, which imports a) makes import order matter and hides behind lazy
imports inside functions, so every import counts here, at any depth of a module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Package directory -> the directory its module names are relative to.
PACKAGES = {
    REPO / "tensorchat": REPO,
    REPO / "facade": REPO,
    REPO / "inference": REPO,
    REPO / "build" / "enginebuild": REPO / "build",
}


def first_party_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package, base in PACKAGES.items():
        for path in package.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod.
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
            yield node.module


def import_graph() -> dict[str, set[str]]:
    modules = first_party_modules()
    return {
        name: {m for m in imported_names(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for dependency in graph[module]:
            if dependency not in index:
                visit(dependency)
                low[module] = min(low[module], low[dependency])
            elif dependency in stack:
                low[module] = min(low[module], index[dependency])
        if low[module] == index[module]:
            component = [stack.pop()]
            while component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_circles_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_first_party_packages_have_no_import_circles() -> None:
    graph = import_graph()
    assert "tensorchat.bench.target" in graph  # the walk found the packages
    assert circles(graph) == []
