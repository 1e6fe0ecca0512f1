"""The first-party packages import each other without circles, and the facade imports
nothing that its pip extra does not install (no inference code, no torch).

A circle (a imports b, which imports a) makes import order matter and hides behind lazy
imports inside functions, so every import counts here, at any depth of a module.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


# What a facade replica must never load (issue 18: `import facade.app` with them took 4-5 s
# and 280 MiB, against 0.5 s and 57 MiB without).
HEAVY = {"torch", "transformers", "tokenizers"}


def reached_from(graph: dict[str, set[str]], package: str) -> set[str]:
    """The first-party modules `package` imports, at any depth (lazy imports too)."""
    reached: set[str] = set()
    todo = [m for m in graph if m == package or m.startswith(package + ".")]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    return reached


def installed_closure(requirements: list[str]) -> set[str]:
    """The distributions `requirements` install, with their dependencies and extras, as this
    environment's metadata says (normalized names)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # a marker leaves it out here (another platform or Python)
        extras = ["", *requirement.extras]
        for dependency in map(Requirement, requires):
            marker = dependency.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras):
                todo.append(dependency)
    return {name for name, _ in seen}


def facade_requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    own = canonicalize_name(project["name"])
    return [
        r
        for r in project["dependencies"] + project["optional-dependencies"]["facade"]
        if canonicalize_name(Requirement(r).name) != own
    ]


def test_reached_from_follows_imports_at_any_depth() -> None:
    graph = {"facade": {"facade.a"}, "facade.a": {"t.b"}, "t.b": {"t.c"}, "t.c": set(), "x": set()}
    assert reached_from(graph, "facade") == {"facade", "facade.a", "t.b", "t.c"}


def test_the_facade_imports_no_inference_code() -> None:
    reached = reached_from(import_graph(), "facade")
    assert "facade.app" in reached and "tensorchat.v1.inference_pb2" in reached
    assert not {m for m in reached if m.partition(".")[0] in {"inference", "enginebuild"}}


def test_the_facade_imports_only_what_its_extra_installs() -> None:
    # Every third-party module the facade (and the tensorchat modules it uses) imports, even
    # lazily, comes with `pip install tensorchat[facade]`, and that install has none of HEAVY.
    allowed = installed_closure(facade_requirements())
    assert {"fastapi", "uvicorn", "grpcio", "redis"} <= allowed  # the walk found them
    assert not allowed & HEAVY
    owners = metadata.packages_distributions()
    modules = first_party_modules()
    outside = set(sys.stdlib_module_names) | {m.partition(".")[0] for m in modules}
    for module in sorted(reached_from(import_graph(), "facade")):
        for name in imported_names(modules[module]):
            top = name.partition(".")[0]
            if top in outside:
                continue
            dists = {canonicalize_name(d) for d in owners.get(top, [])}
            assert dists & allowed, f"{module} imports {top}, which tensorchat[facade] lacks"
