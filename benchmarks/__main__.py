"""Every benchmark, one after the other: ``python benchmarks [--quick] [--only NAME ...] [--skip NAME ...]``.

Each script runs as its own process with its defaults (``--quick``: smaller sizes, for a look in
about five minutes rather than twenty) and prints its own figures, each against a baseline
measured in that same run. ``scale_out`` needs PostgreSQL (``--database`` of that script;
``TICKETING_BENCH_POSTGRES_URL`` here): without one it is left out, and said so. A script that
fails is reported at the end, and makes the exit status 1; the others still run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

# name -> (what it measures, its quick arguments)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "write_path_http": ("the write path over real HTTP vs a one-insert floor app", ["--rounds", "2", "--seconds", "5"]),
    "write_path": ("the same in process (ASGI), with propagation commit -> replica", ["--rounds", "1"]),
    "sqlite_trips": ("trips to SQLite's threads per create, ours vs aiosqlite as shipped", ["--creates", "160"]),
    "propagation": ("an edit's 200 -> the live stream's applied record, memory and NATS", ["--edits", "200"]),
    "memory": ("peak RSS through 100,000 events, and a 100-buyer order rush", ["--events", "20000"]),
    "nats_bus": ("the NATS bus vs raw nats-py JetStream", ["--rounds", "3"]),
    "startup": ("the schema step of a start: migrations vs create_all", ["--rounds", "10"]),
    "scale_out": ("1, 2, 4 instances on PostgreSQL and a three-node NATS cluster", ["--instances", "1,2"]),
}


def postgres_reachable(url: str) -> bool:
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def probe() -> bool:
        try:
            connection = await asyncpg.connect(dsn, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await connection.close()
        return True

    return asyncio.run(probe())


def main() -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a look, not a record")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), metavar="NAME")
    parser.add_argument("--skip", nargs="+", choices=BENCHMARKS, default=[], metavar="NAME")
    args = parser.parse_args()
    chosen = [name for name in args.only if name not in args.skip]
    postgres = os.environ.get("TICKETING_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    failed: list[str] = []
    for number, name in enumerate(chosen, 1):
        what, quick = BENCHMARKS[name]
        print(f"\n=== {number}/{len(chosen)} {name}: {what}", flush=True)
        command = [sys.executable, str(HERE / f"{name}.py"), *(quick if args.quick else [])]
        if name == "scale_out":
            if not postgres_reachable(postgres):
                print(f"left out: no PostgreSQL at {postgres} (set TICKETING_BENCH_POSTGRES_URL)", flush=True)
                continue
            command += ["--database", postgres]
        began = time.monotonic()
        code = subprocess.call(command)
        print(f"--- {name}: {'done' if code == 0 else f'FAILED (exit {code})'} in {time.monotonic() - began:.0f} s")
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
