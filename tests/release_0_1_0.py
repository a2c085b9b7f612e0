"""A database as release 0.1.0 left it: the DDL its create_all ran (frozen in tests/data), and rows in every table.

The rows are inserted through the tables as that schema made them (reflected), never through
today's models, so they stay what that release could have written.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher, profiles
from sqlalchemy import Connection, MetaData, inspect, text
from sqlalchemy.engine import make_url

from app import db

DATA = Path(__file__).resolve().parent / "data"
PASSWORD = "correct horse"
USER = {"id": "ada00000-0000-4000-8000-000000000001", "email": "ada@example.com"}
BOB = "b0b00000-0000-4000-8000-000000000002"
CONCERT, THEATRE = "7c1f0b6e-0000-4000-8000-000000000001", "7c1f0b6e-0000-4000-8000-000000000002"
ORDER = "0dd3e5a1-0000-4000-8000-000000000001"


def statements(dialect: str) -> list[str]:
    ddl = (DATA / f"release_0_1_0_{dialect}.sql").read_text()
    code = "\n".join(line for line in ddl.splitlines() if not line.startswith("--"))
    return [statement.strip() for statement in code.split(";") if statement.strip()]


async def build_previous_release(url: str) -> None:
    engine = db.create_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in statements(make_url(url).get_backend_name()):
                await connection.exec_driver_sql(statement)
            await connection.run_sync(insert_rows)
    finally:
        await engine.dispose()


def insert_rows(connection: Connection) -> None:
    tables = MetaData()
    tables.reflect(connection)
    for name, rows in rows_of_the_release().items():
        connection.execute(tables.tables[name].insert(), rows)


def rows_of_the_release() -> dict[str, list[dict[str, Any]]]:
    """Ada's concert ticket, edited once and ordered by her; Bob's theatre ticket; the events they caused."""
    now = datetime.now(UTC).replace(microsecond=0)
    hashed = PasswordHasher.from_parameters(profiles.CHEAPEST).hash(PASSWORD)
    # Recent enough that nothing is due at start: the order does not expire, the outbox keeps its rows.
    created, expires, sent = now - timedelta(minutes=5), now + timedelta(days=1), now - timedelta(minutes=4)
    return {
        "users_user": [
            {**USER, "password_hash": hashed, "created_at": created},
            {"id": BOB, "email": "bob@example.com", "password_hash": hashed, "created_at": created},
        ],
        "tickets_ticket": [
            {"id": CONCERT, "title": "concert", "price": 2050, "user_id": USER["id"], "order_id": ORDER, "version": 2},
            {"id": THEATRE, "title": "theatre", "price": 1000, "user_id": BOB, "order_id": None, "version": 0},
        ],
        "tickets_order": [{"id": ORDER, "ticket_id": CONCERT, "status": "created", "version": 0}],
        "orders_ticket": [
            {"id": CONCERT, "title": "concert", "price": 2050, "version": 2},
            {"id": THEATRE, "title": "theatre", "price": 1000, "version": 0},
        ],
        "orders_order": [
            {
                "id": ORDER,
                "user_id": USER["id"],
                "ticket_id": CONCERT,
                "status": "created",
                "expires_at": expires,
                "created_at": created,
                "version": 0,
            }
        ],
        "bus_outbox": [
            {
                "id": "e0000000-0000-4000-8000-000000000001",
                "subject": "ticket:created",
                "source": "tickets",
                "payload": b'{"id":"%s","version":0,"title":"concert","price":20,"userId":"%s"}'
                % (CONCERT.encode(), USER["id"].encode()),
                "occurred_at": created,
                "published_at": sent,
            },
            {
                "id": "e0000000-0000-4000-8000-000000000002",
                "subject": "order:created",
                "source": "orders",
                "payload": b'{"id":"%s","version":0,"status":"created","userId":"%s","expiresAt":"%s","ticket":'
                b'{"id":"%s","price":20.5}}'
                % (ORDER.encode(), USER["id"].encode(), expires.isoformat().encode(), CONCERT.encode()),
                "occurred_at": created,
                "published_at": sent,
            },
        ],
    }


def snapshot(connection: Connection) -> dict[str, Any]:
    """Every table of the database: its columns, its index names and all its rows."""
    inspector = inspect(connection)
    return {
        name: {
            "columns": [column["name"] for column in inspector.get_columns(name)],
            "indexes": sorted(str(index["name"]) for index in inspector.get_indexes(name)),
            "rows": [tuple(row) for row in connection.execute(text(f"SELECT * FROM {name} ORDER BY 1"))],
        }
        for name in inspector.get_table_names()
    }
