"""Modules share nothing but integration events: an import across modules fails the build."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"
MODULES = ("users", "tickets", "orders")
# Shared kernel every module may use: the bus, events and helpers, database plumbing, settings.
SHARED = ("app.bus", "app.common", "app.db", "app.settings")


def imported_modules(path: Path, package: str | None = None) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = package or ".".join(path.relative_to(APP.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def owner(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "app" and parts[1] in MODULES else None


@pytest.mark.parametrize("module", MODULES)
def test_a_module_imports_no_other_module(module: str) -> None:
    offenders = []
    for path in sorted((APP / module).rglob("*.py")):
        for imported in imported_modules(path):
            other = owner(imported)
            if other is not None and other != module:
                offenders.append(f"{path.relative_to(APP.parent)} imports {imported}")
    assert not offenders, "modules must talk through the bus only:\n" + "\n".join(offenders)


def test_the_shared_kernel_imports_no_module() -> None:
    offenders = []
    for shared in SHARED:
        root = APP.parent.joinpath(*shared.split("."))
        paths = sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]
        for path in paths:
            offenders += [
                f"{path.relative_to(APP.parent)} imports {name}" for name in imported_modules(path) if owner(name)
            ]
    assert not offenders, "\n".join(offenders)


def test_the_check_catches_relative_and_absolute_imports(tmp_path: Path) -> None:
    # The guard itself must be able to fail.
    probe = tmp_path / "probe.py"
    probe.write_text("from ..orders import models\nimport app.users.service\n")
    found = {owner(name) for name in imported_modules(probe, package="app.tickets")}
    assert {"orders", "users"} <= found


def test_only_the_nats_backend_imports_the_nats_driver() -> None:
    backend = APP / "bus" / "nats"
    offenders = [
        str(path.relative_to(APP.parent))
        for path in sorted(APP.rglob("*.py"))
        if backend not in path.parents and any(name.split(".")[0] == "nats" for name in imported_modules(path))
    ]
    assert not offenders
    # The check looks where the backend is: a move would make it pass vacuously.
    assert any(name.split(".")[0] == "nats" for name in imported_modules(backend / "bus.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def dependencies() -> dict[str, set[str]]:
    """Which modules of ``app`` each one imports, anywhere in it: at the top, in a function, or for types only.

    ``from app.bus import signals`` depends on ``app.bus.signals``, not on the package's
    ``__init__``; ``from app.bus import Retry`` on ``app.bus`` itself.
    """
    paths = sorted(APP.rglob("*.py"))
    known = {module_name(path) for path in paths}
    return {module_name(path): _imports_of(path, known) - {module_name(path)} for path in paths}


def _imports_of(path: Path, known: set[str]) -> set[str]:
    package = ".".join(path.relative_to(APP.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found.update(".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, node.module] if node.module else parent)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return found & known


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in sorted(graph.get(node, ())):
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_the_app_imports_itself_back_round_a_cycle() -> None:
    found = cycles(dependencies())
    assert not found, "import cycles (type-only imports count too):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_can_fail() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# STYLE.md: split a file when it passes ~300 lines; past this it is overdue.
MAX_LINES = 350


def test_no_file_of_the_app_is_too_long_to_read() -> None:
    long = {
        str(path.relative_to(APP.parent)): lines
        for path in sorted(APP.rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these (over {MAX_LINES} lines): {long}"


# STYLE.md: dependencies point one way, entry points → runtime → modules → common → bus, db, settings.
LAYERS = [
    (
        "the bus, the database, settings, time",
        ("app.bus", "app.db", "app.sqlite", "app.settings", "app.clock", "app.waiting"),
    ),
    ("what modules share", ("app.common",)),
    ("the modules", tuple(f"app.{module}" for module in MODULES)),
    ("the runtime", ("app.runtime", "app.preflight", "app.migrations")),
    ("the app's own routes", ("app.ops", "app.live", "app.asyncapi", "app.metrics")),
    ("entry points", ("app.main", "app.cli", "app.__main__", "app.demo", "app.ops_client", "app")),
]


def layer_of(module: str) -> int:
    ranks = [
        (len(prefix), rank)
        for rank, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(f"{prefix}.")
    ]
    assert ranks, f"{module} belongs to no layer of tests/test_architecture.py: place it"
    return max(ranks)[1]


def test_dependencies_point_one_way() -> None:
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {imported} ({LAYERS[layer_of(imported)][0]})"
        for module, imported_ in dependencies().items()
        for imported in imported_
        if layer_of(imported) > layer_of(module)
    ]
    assert not upward, "nothing below imports what is above it:\n" + "\n".join(sorted(upward))
