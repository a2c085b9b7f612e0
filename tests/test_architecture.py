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
