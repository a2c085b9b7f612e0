"""One migration history per module, and one for the bus: its tables, its folder of revisions, its version table.

Nothing here imports Alembic: a start on a database that is up to date needs only the revision
ids its scripts declare (``revisions``), and importing Alembic would cost it more than the check.
"""

from __future__ import annotations

import ast
import functools
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData

from app.bus.outbox import OutboxBase
from app.common.module import Module

BUS = "bus"


class MigrationError(RuntimeError):
    """The schema cannot be brought up to date, or the app cannot run on it, for a reason one sentence tells."""


@dataclass(frozen=True)
class History:
    """A module's (or the bus's) own line of revisions, recorded in a version table of its own."""

    name: str
    metadata: MetaData
    location: Path

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.name}"

    def owns(self, table: str) -> bool:
        # Tables are named after their owner (users_user, bus_outbox): a history looks at its
        # own only, so several histories, or other processes' tables, can share a database.
        return table.startswith(f"{self.name}_")


def histories(modules: Sequence[Module]) -> list[History]:
    """What a process running ``modules`` migrates: the bus's history (the outbox), then each module's."""
    return [
        History(BUS, OutboxBase.metadata, folder_of("app.bus.migrations")),
        *(History(module.name, module.metadata, folder_of(f"app.{module.name}.migrations")) for module in modules),
    ]


def folder_of(package: str) -> Path:
    path = importlib.import_module(package).__file__
    assert path is not None, f"{package} is a regular package, with an __init__.py"
    return Path(path).parent


@dataclass(frozen=True)
class Revisions:
    """What a history's scripts declare: starts compare the version tables with these only."""

    heads: frozenset[str]
    known: frozenset[str]
    base: str


def read_revisions(location: Path) -> Revisions:
    """The revision ids and parents the scripts in ``location`` declare, read as Python syntax.

    Alembic would import every script, and itself first; this reads the same two assignments it
    goes by (``revision``, ``down_revision``). tests/test_migrations.py checks that both agree.
    """
    parents: dict[str, tuple[str, ...]] = {}
    for path in sorted(location.glob("*.py")):
        if path.name != "__init__.py":
            declared = _declared(path)
            if not isinstance(declared.get("revision"), str):
                raise MigrationError(f"{path} is not a revision script: it declares no revision id")
            parents[declared["revision"]] = _ids(declared.get("down_revision"))
    bases = [revision for revision, before in parents.items() if not before]
    if len(bases) != 1:
        raise MigrationError(f"{location} must hold one line of revisions from one base, not {len(bases)}")
    children_of = {parent for before in parents.values() for parent in before}
    return Revisions(heads=frozenset(parents) - children_of, known=frozenset(parents), base=bases[0])


#: Read once per process: the scripts ship with the code and do not change while it runs.
revisions = functools.cache(read_revisions)


def _declared(path: Path) -> dict[str, Any]:
    """A script's module-level ``revision = ...`` and ``down_revision = ...``, typed or not."""
    declared: dict[str, Any] = {}
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in {"revision", "down_revision"}:
                    declared[target.id] = ast.literal_eval(node.value)
    return declared


def _ids(value: Any) -> tuple[str, ...]:
    # down_revision is None for a base, a string, or a tuple of them for a merge.
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)
