"""The schema by migrations: empty databases, up-to-date ones, and the previous release's, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, MetaData, String, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import cli, db, migrations, serve
from app.migrations.environment import compare_context
from app.migrations.history import History, Revisions, folder_of, read_revisions
from app.preflight import StartupError, preflight
from app.settings import Settings, SettingsError
from tests.conftest import POSTGRES_URL, all_histories, migrate, postgres_database
from tests.deployments import FAST_BUS, JWT_SECRET, in_process, make_settings
from tests.processes import AppProcess
from tests.release_0_1_0 import PASSWORD, USER, build_previous_release, snapshot
from tests.test_cli import run_and_fail

HISTORIES = all_histories()
HEADS = {"bus": "bus_0004", "users": "users_0002", "tickets": "tickets_0002", "orders": "orders_0002"}
# What a 0.1.0 database is adopted at, before it is upgraded to the heads.
BASELINES = {name: f"{name}_0001" for name in HEADS}


def adopted(name: str) -> str:
    line = f"{name}: adopted the tables made before migrations at {BASELINES[name]}"
    return line if HEADS[name] == BASELINES[name] else f"{line}, upgraded to {HEADS[name]}"


DbCommand = Callable[..., Awaitable[tuple[int, list[str]]]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_database(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[str]:
    """A database with nothing in it: a SQLite file not made yet, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    if not POSTGRES_URL:
        pytest.skip("set TICKETING_TEST_POSTGRES_URL=postgresql+asyncpg://... to run the PostgreSQL tests")
    async with postgres_database(POSTGRES_URL) as url:
        yield url


@pytest.fixture
async def previous_release(empty_database: str) -> str:
    """A database exactly as release 0.1.0 left it: its create_all schema, with rows in every table."""
    await build_previous_release(empty_database)
    return empty_database


@pytest.fixture
def ticketing_db(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> DbCommand:
    """``ticketing db COMMAND`` against a database: its exit code and the lines it printed."""
    # The command's own logging set-up would take over the test run's; its errors reach caplog instead.
    monkeypatch.setattr(serve, "configure_logging", lambda level="INFO": None)
    monkeypatch.delenv("TICKETING_MIGRATE", raising=False)

    async def run(command: str, url: str, modules: str = "users,tickets,orders") -> tuple[int, list[str]]:
        monkeypatch.setenv("TICKETING_DATABASE_URL", url)
        monkeypatch.setenv("TICKETING_MODULES", modules)
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, ["db", *command.split()])
        return code, capsys.readouterr().out.splitlines()

    return run


async def on(url: str, work: Callable[[Connection], Any]) -> Any:
    engine = db.create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


def differences(history: History) -> Callable[[Connection], list[Any]]:
    return lambda connection: compare_metadata(compare_context(history, connection), history.metadata)


def table_names(connection: Connection) -> list[str]:
    return sorted(inspect(connection).get_table_names())


@pytest.mark.parametrize("history", HISTORIES, ids=lambda history: history.name)
async def test_the_models_and_the_migrations_agree(history: History, database_url: str) -> None:
    # database_url is a copy of a template: an empty database that every history was upgraded on.
    assert await on(database_url, differences(history)) == [], (
        f"the {history.name} models and migrations differ: `ticketing db revision {history.name} -m ...`"
    )


async def test_the_agreement_check_sees_a_column_the_migrations_do_not_make(tmp_path: Path) -> None:
    # The check above must be able to fail: a model with one column more than its migrations.
    users = next(history for history in HISTORIES if history.name == "users")
    models = MetaData()
    for table in users.metadata.tables.values():
        table.to_metadata(models)
    models.tables["users_user"].append_column(Column("phone", String(20)))
    url = f"sqlite+aiosqlite:///{tmp_path / 'users.db'}"
    await migrate(url)
    found = await on(url, differences(History("users", models, users.location)))
    assert [(diff[0], diff[3].name) for diff in found] == [("add_column", "phone")]


@pytest.mark.parametrize("history", HISTORIES, ids=lambda history: history.name)
def test_the_revisions_read_at_start_are_alembics(history: History) -> None:
    assert read_revisions(history.location) == alembics_view(history.location)


def test_the_revisions_read_at_start_follow_branches_and_merges(tmp_path: Path) -> None:
    def script(revision: str, down_revision: str | tuple[str, ...] | None) -> None:
        text = f"revision: str = {revision!r}\ndown_revision = {down_revision!r}\n"
        (tmp_path / f"{revision}_step.py").write_text(text + "def upgrade() -> None:\n    pass\n")

    script("a", None)
    script("b", "a")
    script("c", "a")
    assert read_revisions(tmp_path) == alembics_view(tmp_path)
    assert read_revisions(tmp_path).heads == {"b", "c"}
    script("d", ("b", "c"))
    assert read_revisions(tmp_path) == alembics_view(tmp_path)
    assert read_revisions(tmp_path).heads == {"d"}


def alembics_view(location: Path) -> Revisions:
    scripts = ScriptDirectory(str(location), version_locations=[str(location)])
    (base,) = scripts.get_bases()
    known = frozenset(script.revision for script in scripts.walk_revisions())
    return Revisions(heads=frozenset(scripts.get_heads()), known=known, base=base)


@pytest.mark.parametrize("history", HISTORIES, ids=lambda history: history.name)
def test_every_table_is_named_after_its_history(history: History) -> None:
    # A history compares and adopts only the tables named after it.
    assert all(history.owns(name) for name in history.metadata.tables)


async def test_db_current_says_an_empty_database_is_behind_and_creates_nothing(
    empty_database: str, ticketing_db: DbCommand
) -> None:
    code, lines = await ticketing_db("current", empty_database)
    assert (code, lines) == (1, ["bus: behind", "users: behind", "tickets: behind", "orders: behind"])
    assert await on(empty_database, table_names) == []


async def test_db_upgrade_brings_every_history_to_its_head_once(empty_database: str, ticketing_db: DbCommand) -> None:
    code, lines = await ticketing_db("upgrade", empty_database)
    assert (code, lines) == (0, [f"{name}: upgraded to {head}" for name, head in HEADS.items()])
    assert await ticketing_db("current", empty_database) == (0, [f"{name}: up to date" for name in HEADS])
    assert await ticketing_db("upgrade", empty_database) == (0, [f"{name}: already up to date" for name in HEADS])


async def test_a_process_migrates_only_the_tables_of_the_modules_it_runs(
    empty_database: str, ticketing_db: DbCommand
) -> None:
    code, lines = await ticketing_db("upgrade", empty_database, modules="orders")
    assert (code, lines) == (0, [f"bus: upgraded to {HEADS['bus']}", f"orders: upgraded to {HEADS['orders']}"])
    assert await on(empty_database, table_names) == [
        "alembic_version_bus",
        "alembic_version_orders",
        "bus_dead_letter",
        "bus_outbox",
        "orders_order",
        "orders_revoked_token",
        "orders_ticket",
    ]
    # The other process of a split, on the same database here, adds its own histories beside them.
    code, lines = await ticketing_db("current", empty_database)
    assert (code, lines) == (1, ["bus: up to date", "users: behind", "tickets: behind", "orders: up to date"])


async def test_db_current_names_a_previous_release_database_unversioned_and_changes_nothing(
    previous_release: str, ticketing_db: DbCommand
) -> None:
    before = await on(previous_release, snapshot)
    code, lines = await ticketing_db("current", previous_release)
    assert (code, lines) == (1, [f"{name}: unversioned" for name in HEADS])
    assert await on(previous_release, snapshot) == before


async def test_db_upgrade_adopts_a_previous_release_database_and_the_api_serves_its_data(
    previous_release: str, ticketing_db: DbCommand
) -> None:
    before = await on(previous_release, snapshot)
    code, lines = await ticketing_db("upgrade", previous_release)
    assert (code, lines) == (0, [adopted(name) for name in HEADS])
    assert_kept(before, await on(previous_release, snapshot))
    async with in_process(make_settings(previous_release, FAST_BUS)) as api:
        await reads_back_the_previous_release(api.http)


async def test_auto_adopts_a_previous_release_database_at_start_keeping_every_row(previous_release: str) -> None:
    before = await on(previous_release, snapshot)
    async with in_process(make_settings(previous_release, FAST_BUS)) as api:
        # The relay and the expiry worker are running: nothing of theirs is due, so nothing moved.
        assert_kept(before, await on(previous_release, snapshot))
        await reads_back_the_previous_release(api.http)
    assert {status.state for status in await statuses(previous_release)} == {migrations.State.UP_TO_DATE}


@pytest.mark.slow
async def test_ticketing_run_adopts_a_previous_release_database_and_serves_its_data(
    previous_release: str, tmp_path: Path
) -> None:
    env = {"TICKETING_DATABASE_URL": previous_release, "TICKETING_JWT_SECRET": JWT_SECRET}
    app = await AppProcess(env, cwd=tmp_path).start()
    try:
        async with httpx.AsyncClient(base_url=app.url) as http:
            await reads_back_the_previous_release(http)
    finally:
        await app.stop()
    adopted = (
        f"[schema] orders: adopted the tables made before migrations at orders_0001, upgraded to {HEADS['orders']}"
    )
    assert adopted in app.lines, app.output()


async def test_adoption_refuses_tables_that_lack_part_of_the_previous_release(
    previous_release: str, ticketing_db: DbCommand, caplog: pytest.LogCaptureFixture
) -> None:
    engine = db.create_engine(previous_release)
    async with engine.begin() as connection:
        await connection.execute(text("DROP INDEX uq_orders_order_live_ticket"))
    await engine.dispose()
    before = await on(previous_release, snapshot)
    code, lines = await ticketing_db("upgrade", previous_release)
    assert (code, lines) == (2, [])
    assert "orders: cannot adopt the tables made before migrations, they lack index uq_orders_order_live_ticket" in (
        caplog.text
    )
    # All or nothing: the histories that could be adopted were not stamped either.
    assert await on(previous_release, snapshot) == before
    # ticketing run says the same before serving, in one line.
    with pytest.raises(StartupError, match="they lack index uq_orders_order_live_ticket"):
        await preflight(make_settings(previous_release, FAST_BUS))


async def test_a_database_a_newer_release_migrated_is_refused(
    empty_database: str, ticketing_db: DbCommand, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate(empty_database)
    engine = db.create_engine(empty_database)
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version_users SET version_num = 'users_0099'"))
    await engine.dispose()
    newer = "users: at users_0099, a revision this release does not know (a newer one migrated it)"
    code, lines = await ticketing_db("current", empty_database)
    assert (code, lines[1]) == (1, newer)
    assert await ticketing_db("upgrade", empty_database) == (2, [])
    assert newer in caplog.text
    for migrate_mode in ("auto", "off"):
        settings = make_settings(empty_database, FAST_BUS)
        settings = replace(settings, database=replace(settings.database, migrate=migrate_mode))
        with pytest.raises(StartupError, match="users_0099, a revision this release does not know"):
            await preflight(settings)


async def test_upgrades_running_at_once_on_one_database_take_turns(empty_database: str) -> None:
    # Threads with an event loop each, as separate processes would be: nothing but the database's
    # lock keeps them apart.
    def upgrade_alone() -> list[migrations.Upgrade]:
        async def run() -> list[migrations.Upgrade]:
            engine = db.create_engine(empty_database)
            try:
                return await migrations.upgrade(engine, HISTORIES)
            finally:
                await engine.dispose()

        return asyncio.run(run())

    results = await asyncio.gather(*(asyncio.to_thread(upgrade_alone) for _ in range(3)))
    # One of them did the work; the others waited for it, then found nothing left to do.
    assert sorted([step.changed for step in result] for result in results) == [[False] * 4, [False] * 4, [True] * 4]
    assert {status.state for status in await statuses(empty_database)} == {migrations.State.UP_TO_DATE}


async def test_two_databases_upgraded_at_once_in_one_process_both_end_up_to_date(tmp_path: Path) -> None:
    # Two runtimes starting together in one event loop, each on a database of its own.
    urls = [f"sqlite+aiosqlite:///{tmp_path / name}" for name in ("one.db", "two.db")]
    await asyncio.gather(*(migrate(url) for url in urls))
    for url in urls:
        assert {status.state for status in await statuses(url)} == {migrations.State.UP_TO_DATE}


async def test_db_revision_writes_what_the_models_add_into_the_history_folder(tmp_path: Path) -> None:
    users = next(history for history in HISTORIES if history.name == "users")
    models = MetaData()
    for table in users.metadata.tables.values():
        table.to_metadata(models)
    models.tables["users_user"].append_column(Column("phone", String(20)))
    folder = tmp_path / "migrations"
    shutil.copytree(users.location, folder, ignore=shutil.ignore_patterns("__pycache__"))
    changed = History("users", models, folder)

    written = migrations.revise(changed, "add a phone number")
    assert written is not None and written.parent == folder and written.name.startswith("users_0003_")
    assert "add_column(sa.Column('phone', sa.String(length=20)" in written.read_text()
    assert migrations.revise(changed, "again") is None, "nothing left to write"
    # The revision runs, and brings the tables to what the models say.
    url = f"sqlite+aiosqlite:///{tmp_path / 'users.db'}"
    engine = db.create_engine(url)
    assert [str(step) for step in await migrations.upgrade(engine, [changed])] == ["users: upgraded to users_0003"]
    await engine.dispose()
    assert await on(url, differences(changed)) == []


async def test_db_revision_writes_nothing_when_the_models_match(
    ticketing_db: DbCommand, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Into copies of the folders: were a model changed, the command would write a revision.
    def copied(package: str) -> Path:
        copy = tmp_path / package
        if not copy.exists():
            shutil.copytree(folder_of(package), copy, ignore=shutil.ignore_patterns("__pycache__"))
        return copy

    monkeypatch.setattr("app.migrations.history.folder_of", copied)
    assert await ticketing_db("revision users -m nothing", sqlite_url) == (
        0,
        ["users: nothing to write, its migrations already make what its models say"],
    )
    assert sorted(path.name for path in (tmp_path / "app.users.migrations").glob("*.py")) == [
        "__init__.py",
        "users_0001_baseline.py",
        "users_0002_revoked_tokens.py",
    ]


@pytest.mark.slow
async def test_off_refuses_to_start_on_a_database_that_is_behind_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ticketing.db'}"
    env = {"TICKETING_MIGRATE": "off", "TICKETING_DATABASE_URL": url, "TICKETING_JWT_SECRET": JWT_SECRET}
    code, output = await run_and_fail(tmp_path, env)
    assert code == 2
    assert output.decode().splitlines() == [
        f"ERROR: the database SQLite {tmp_path / 'ticketing.db'} is behind (bus: behind; users: behind; "
        "tickets: behind; orders: behind) and TICKETING_MIGRATE=off: run `ticketing db upgrade` first"
    ]
    # Once upgraded, the same settings serve.
    await migrate(url)
    app = await AppProcess(env, cwd=tmp_path).start()
    await app.stop()
    assert not any("[schema]" in line for line in app.lines), app.output()


@pytest.mark.slow
async def test_processes_starting_at_once_on_an_empty_database_migrate_it_once_and_all_serve(
    empty_database: str, tmp_path: Path
) -> None:
    env = {"TICKETING_DATABASE_URL": empty_database, "TICKETING_JWT_SECRET": JWT_SECRET}
    processes = [AppProcess(env, cwd=tmp_path) for _ in range(3)]
    try:
        await asyncio.gather(*(process.start(timeout=60) for process in processes))
    finally:
        await asyncio.gather(*(process.stop() for process in processes if process.process is not None))
    migrated = [process for process in processes if f"[schema] users: upgraded to {HEADS['users']}" in process.lines]
    assert len(migrated) == 1, "\n\n".join(process.output() for process in processes)
    assert {status.state for status in await statuses(empty_database)} == {migrations.State.UP_TO_DATE}
    for history in HISTORIES:
        assert await on(empty_database, differences(history)) == []


def test_migrate_is_auto_unless_set_to_off() -> None:
    assert Settings.from_env({}).database.migrate == "auto"
    assert Settings.from_env({"TICKETING_MIGRATE": "off"}).database.migrate == "off"
    with pytest.raises(SettingsError, match=r"TICKETING_MIGRATE is 'yes'; choose auto .* or off"):
        Settings.from_env({"TICKETING_MIGRATE": "yes"})


async def statuses(url: str) -> list[migrations.Status]:
    engine: AsyncEngine = db.create_engine(url)
    try:
        return await migrations.statuses(engine, HISTORIES)
    finally:
        await engine.dispose()


def assert_kept(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Every table, column, index and row the previous release had is still there, as it was.

    Later revisions may add tables, columns and indexes beside them; a row is compared on the
    columns it had.
    """
    for name, table in before.items():
        assert name in after, f"table {name} is gone"
        now = after[name]
        assert set(table["columns"]) <= set(now["columns"]), f"{name} lost columns"
        assert set(table["indexes"]) <= set(now["indexes"]), f"{name} lost indexes"
        kept = [
            tuple(dict(zip(now["columns"], row, strict=True))[column] for column in table["columns"])
            for row in now["rows"]
        ]
        assert kept == table["rows"], f"the rows of {name} changed"


async def reads_back_the_previous_release(http: Any) -> None:
    """Sign in as the stored user and read the stored tickets and order, through the HTTP API."""
    signed_in = await http.post("/api/users/signin", json={"email": USER["email"], "password": PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["id"] == USER["id"]
    headers = {"Authorization": f"Bearer {signed_in.json()['token']}"}
    tickets = {ticket["id"]: ticket for ticket in (await http.get("/api/tickets")).json()}
    assert tickets == {
        "7c1f0b6e-0000-4000-8000-000000000001": {
            "id": "7c1f0b6e-0000-4000-8000-000000000001",
            "title": "concert",
            "price": 20.5,
            "userId": USER["id"],
            "orderId": "0dd3e5a1-0000-4000-8000-000000000001",
            "version": 2,
        },
        "7c1f0b6e-0000-4000-8000-000000000002": {
            "id": "7c1f0b6e-0000-4000-8000-000000000002",
            "title": "theatre",
            "price": 10.0,
            "userId": "b0b00000-0000-4000-8000-000000000002",
            "orderId": None,
            "version": 0,
        },
    }
    one = await http.get("/api/tickets/7c1f0b6e-0000-4000-8000-000000000001")
    assert one.headers["etag"] == '"2"'
    (order,) = (await http.get("/api/orders", headers=headers)).json()
    assert order["id"] == "0dd3e5a1-0000-4000-8000-000000000001"
    assert (order["status"], order["version"]) == ("created", 0)
    assert order["ticket"] == {
        "id": "7c1f0b6e-0000-4000-8000-000000000001",
        "title": "concert",
        "price": 20.5,
        "version": 2,
    }
