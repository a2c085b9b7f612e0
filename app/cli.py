"""``ticketing run`` (also ``python -m app run``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from app.settings import Settings, SettingsError


class _SeedFormatter(logging.Formatter):
    """INFO lines read exactly like the original's logs; anything louder says its level."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno == logging.INFO else f"{record.levelname}: {message}"


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_SeedFormatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve the HTTP API")
    run.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=_port, default=8000, help="port to listen on (default 8000)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--access-log", action="store_true", help="log every HTTP request")
    return parser


def run(host: str, port: int, log_level: str, access_log: bool) -> int:
    import uvicorn

    from app.main import create_app

    configure_logging(log_level)
    try:
        app = create_app(Settings.from_env(), listening_on=port)
    except SettingsError as exc:
        logging.getLogger("ticketing").error("%s", exc)
        return 2
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=access_log,
        timeout_graceful_shutdown=10,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run(args.host, args.port, args.log_level, args.access_log)
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown ones


if __name__ == "__main__":
    sys.exit(main())
