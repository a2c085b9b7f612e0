"""``ticketing run`` serves the API; ``ticketing db`` migrates its database; ``ticketing demo`` tells the
seed's lesson; ``ticketing dead-letters`` lists and replays what a running app dead-lettered.

Also ``python -m app``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.settings import KNOWN_MODULES, Settings, SettingsError

if TYPE_CHECKING:
    from app.migrations import History


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port")
    return port


def _workers(value: str) -> int:
    workers = int(value)
    if workers < 1:
        raise argparse.ArgumentTypeError(f"{value} workers: at least 1")
    return workers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve the HTTP API")
    run.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=_port, default=8000, help="port to listen on (default 8000)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--access-log", action="store_true", help="log every HTTP request")
    run.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="processes serving on the one port (default 1); more than one needs a shared bus (nats://)",
    )
    database = commands.add_parser(
        "db",
        help="the database schema: upgrade it, or say where it stands",
        description="The tables of the modules in TICKETING_MODULES, and the bus's outbox, by Alembic migrations "
        "(one history per module). Exit codes: 0 done (current: all up to date), 1 (current) some history is "
        "behind or unversioned, 2 the database cannot be reached or upgraded.",
    )
    db_commands = database.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="bring every history up to date; adopts a database made before migrations")
    db_commands.add_parser("current", help="say, per history, up to date, behind or unversioned; changes nothing")
    revision = db_commands.add_parser(
        "revision",
        help="for developers: autogenerate a history's next revision from its models, into its migrations folder",
    )
    revision.add_argument("history", choices=["bus", *KNOWN_MODULES], help="whose tables changed")
    revision.add_argument("-m", "--message", required=True, help="what the revision does, e.g. 'add a phone column'")
    demo = commands.add_parser(
        "demo",
        help="a narrated walkthrough: events, the concurrency problem and its fix, reservations",
        description="Starts the app in-process (or drives one at --url), replays the seed's manual test, "
        "shows why events need versions, and checks every claim it makes: it exits 1 if one did not hold.",
    )
    target = demo.add_mutually_exclusive_group()
    target.add_argument("--url", help="drive a running app instead of starting one (e.g. http://127.0.0.1:8000)")
    target.add_argument("--bus", help="bus URL for the in-process app, e.g. nats://127.0.0.1:4222 (default: in-memory)")
    demo.add_argument("--seed", type=int, default=8, help="seed of the chaotic bus, for a reproducible story")
    demo.add_argument("--step", action="store_true", help="wait for Enter between steps (for a live audience)")
    demo.add_argument("--no-color", action="store_true", help="plain text (also when NO_COLOR is set or not a tty)")
    demo.add_argument(
        "--ops-token", default=None, help="with --url: the app's TICKETING_OPS_TOKEN (default: from the environment)"
    )
    _add_dead_letters(commands)
    return parser


def _add_dead_letters(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from app.ops_client import DEFAULT_URL

    def connection(parser: argparse.ArgumentParser, default: object) -> None:
        # On both levels, so that `dead-letters --url U replay X` and `dead-letters replay X --url U` both work.
        parser.add_argument("--url", default=default, help=f"the running app (default {DEFAULT_URL})")
        parser.add_argument(
            "--ops-token", default=default, help="the app's TICKETING_OPS_TOKEN (default: from the environment)"
        )

    dead = commands.add_parser(
        "dead-letters",
        help="list what a running app dead-lettered; `replay ID|--all` sends it back to its group",
        description="Talks to a running app's /ops API (TICKETING_OPS_TOKEN when it is guarded).",
    )
    connection(dead, None)
    dead.add_argument("--json", action="store_true", help="the list as JSON, as /ops/dead-letters gives it")
    actions = dead.add_subparsers(dest="dead_letters_command")
    replay = actions.add_parser(
        "replay",
        help="deliver dead letters to their group again",
        description="Replaying a dead letter also replays those of its group about the same record, which "
        "waited behind it; the version rule lets each through in turn.",
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="the dead letter's id (see `ticketing dead-letters`)")
    which.add_argument("--all", action="store_true", help="every dead letter")
    connection(replay, argparse.SUPPRESS)


def dead_letters(args: argparse.Namespace) -> int:
    import os

    from app import ops_client

    url = args.url or ops_client.DEFAULT_URL
    token = args.ops_token or os.environ.get("TICKETING_OPS_TOKEN") or None
    if args.dead_letters_command == "replay":
        return ops_client.run(url, token, lambda c: ops_client.replay_dead_letters(c, args.id, every=args.all))
    return ops_client.run(url, token, lambda c: ops_client.list_dead_letters(c, as_json=args.json))


def database(args: argparse.Namespace) -> int:
    from app import migrations
    from app.preflight import StartupError
    from app.runtime import load_module
    from app.serve import configure_logging

    configure_logging("WARNING")
    try:
        if args.db_command == "revision":
            return revision(args.history, args.message)
        settings = Settings.from_env()
        histories = migrations.histories([load_module(name) for name in settings.modules])
        return asyncio.run(migrate(args.db_command, settings.database.url, histories))
    except (SettingsError, StartupError, migrations.MigrationError) as exc:
        logging.getLogger("ticketing").error("%s", exc)
        return 2


async def migrate(command: str, url: str, histories: Sequence[History]) -> int:
    from app import db, migrations
    from app.preflight import reach_database

    engine = db.create_engine(url)
    try:
        await reach_database(engine)
        if command == "upgrade":
            for upgraded in await migrations.upgrade(engine, histories):
                print(upgraded)
            return 0
        found = await migrations.statuses(engine, histories)
        for status in found:
            print(status)
        return 0 if all(status.state is migrations.State.UP_TO_DATE for status in found) else 1
    finally:
        await engine.dispose()


def revision(name: str, message: str) -> int:
    from app import migrations
    from app.runtime import load_module

    (history,) = (h for h in migrations.histories([load_module(m) for m in KNOWN_MODULES]) if h.name == name)
    path = migrations.revise(history, message)
    if path is None:
        print(f"{name}: nothing to write, its migrations already make what its models say")
    else:
        print(f"{name}: wrote {path}; read it, then `ruff format` it and run the tests")
    return 0


def demo(args: argparse.Namespace) -> int:
    from app.demo import DemoOptions, run_demo

    options = DemoOptions(
        url=args.url,
        bus=args.bus,
        seed=args.seed,
        step=args.step,
        color=not args.no_color,
        ops_token=args.ops_token,
    )
    return run_demo(options)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        from app import serve

        return serve.run(serve.Serving(args.host, args.port, args.log_level, args.access_log, args.workers))
    if args.command == "db":
        return database(args)
    if args.command == "demo":
        return demo(args)
    if args.command == "dead-letters":
        return dead_letters(args)
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown ones


if __name__ == "__main__":
    sys.exit(main())
