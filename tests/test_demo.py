"""``ticketing demo``: it tells the seed's lesson against the real app, and never claims what did not happen."""

from __future__ import annotations

import asyncio
import io
import re
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import app.demo.naive
from app.cli import build_parser
from app.demo import DemoOptions, run_demo
from app.demo.naive import NaiveRun
from app.demo.narrator import make_console
from tests.processes import AppProcess

ANSI = re.compile(r"\x1b\[")
SECRET = "demo-tests-secret-of-decent-length"
SEED_LINES = [
    "[tickets] Event published to subject ticket:created",
    "[orders] Message received: ticket:created / orders-service",
    "[tickets] Event published to subject ticket:updated",
    "[orders] Message received: ticket:updated / orders-service",
]


def demo(options: DemoOptions) -> tuple[int, str]:
    out = io.StringIO()
    code = run_demo(options, out)
    return code, out.getvalue()


def in_order(text: str, expected: list[str]) -> bool:
    position = 0
    for wanted in expected:
        position = text.find(wanted, position)
        if position < 0:
            return False
        position += len(wanted)
    return True


def test_demo_tells_the_whole_story_and_every_claim_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    # --step, with a presenter pressing Enter at every pause.
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n" * 10))
    code, out = demo(DemoOptions(seed=7, step=True, color=False))
    assert code == 0, out
    assert in_order(out, SEED_LINES), out
    assert "✘" not in out
    assert not ANSI.search(out), "--no-color means plain text"
    assert out.count("press Enter") == 4
    # (a) the naive copy ends up wrong, shown beside the right price
    assert "✔ the naive copy ends up wrong" in out
    assert re.search(r"naive copy: \d+\.\d\d \(v\d\)\s+the ticket: 50\.00 \(v6\)", out), out
    # (b) early versions refused and retried, each version applied once, the copy converged
    assert re.search(r"✔ \d+ early deliver(y|ies) refused", out), out
    # On a busy machine a round's edits may all arrive in order; the demo then edits another
    # round, so the last version is 7 or later.
    assert re.search(r"✔ each of versions 2 to ([7-9]|\d\d+) was applied exactly once", out), out
    assert "[bus] Not yet: ticket:updated / orders-service" in out
    assert "✔ the copy equals the ticket: same price, same version" in out
    # (c) reserved: 409; cancelled: 204; edited again: 200
    assert in_order(out, ["→  409", "Cannot edit a reserved ticket", "→  204", "the ticket is free again", "→  200"])
    assert re.search(r"All \d+ claims held\.", out)


def test_demo_exits_1_when_what_it_shows_did_not_happen(monkeypatch: pytest.MonkeyPatch) -> None:
    async def lucky(seed: int, prices: list[Decimal], tries: int = 20) -> list[NaiveRun]:
        # A naive copy that happened to end right: the demo must not claim it went wrong.
        return [NaiveRun(seed=seed, prices=prices, copy_version=len(prices) - 1, copy_price=prices[-1])]

    monkeypatch.setattr(app.demo.naive, "first_wrong_run", lucky)
    code, out = demo(DemoOptions(color=False))
    assert code == 1
    assert "✘ the naive copy ends up wrong" in out
    assert "The demo stopped: what it said would happen did not." in out
    assert "All " not in out


def test_demo_runs_the_same_story_over_the_bus_it_is_given() -> None:
    # Delays up to 50 ms, as the demo gives its own bus: with the 20 ms default, edits slower
    # than about 12 ms each (a loaded machine) would arrive in order, and "refused" not happen.
    chaotic = "memory://?chaos=5&chaos_delay=0.05&backoff=0.005&backoff_max=0.1"
    code, out = demo(DemoOptions(bus=chaotic, color=False))
    assert code == 0, out
    assert "in-memory bus (chaos seed 5)" in out
    assert in_order(out, SEED_LINES), out


def test_demo_counts_every_delivery_only_once_the_bus_has_settled() -> None:
    # Every message twice, copies up to 0.3 s apart: the second copy of the version applied last
    # is still on its way when the copy is complete. Claims about duplicates must wait for it.
    chaos = "memory://?chaos=5&chaos_duplicates=1&chaos_delay=0.3&backoff=0.005&backoff_max=0.1&max_deliver=80"
    code, out = demo(DemoOptions(bus=chaos, color=False))
    assert code == 0, out
    versions = re.search(r"✔ each of versions (\d+) to (\d+) was applied exactly once", out)
    assert versions, out
    first, last = int(versions[1]), int(versions[2])
    # One applied copy and one duplicate for each edit, not fewer.
    assert f"{last - first + 1} duplicate deliveries acknowledged" in out, out


def test_demo_refuses_a_bus_it_cannot_use_with_exit_2() -> None:
    code, out = demo(DemoOptions(bus="carrier-pigeon://roof", color=False))
    assert code == 2
    assert "The demo could not start" in out and "unsupported bus URL" in out


def test_demo_takes_either_a_url_or_a_bus_not_both() -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["demo", "--url", "http://127.0.0.1:8000", "--bus", "memory://"])
    assert exit_.value.code == 2
    args = build_parser().parse_args(["demo", "--seed", "3", "--step", "--no-color"])
    assert (args.seed, args.step, args.no_color, args.url, args.bus) == (3, True, True, None, None)


def test_colour_follows_no_color_and_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert make_console(color=False).color_system is None
    monkeypatch.setenv("NO_COLOR", "1")
    assert make_console(color=True).color_system is None


@pytest.mark.slow
async def test_demo_drives_a_running_app_and_the_app_logs_the_seed_lines(tmp_path: Path) -> None:
    chaotic = "memory://?chaos=11&chaos_delay=0.05&backoff=0.005&backoff_max=0.1"
    running = await AppProcess({"TICKETING_JWT_SECRET": SECRET, "TICKETING_BUS_URL": chaotic}, cwd=tmp_path).start()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app",
            "demo",
            "--url",
            running.url,
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        raw, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await running.stop()
    out = raw.decode()
    assert process.returncode == 0, out
    assert "in-memory bus (chaos seed 11)" in out
    assert in_order(out, ["tickets published ticket:created v0", "orders-service ← ticket:created v0: applied"])
    assert "→  409" in out and re.search(r"All \d+ claims held\.", out)
    # The app's own terminal reads like the seed's.
    assert in_order(running.output(), SEED_LINES), running.output()


async def test_demo_says_why_when_the_url_is_unreachable() -> None:
    code, out = await asyncio.to_thread(demo, DemoOptions(url="http://127.0.0.1:9", color=False))
    assert code == 2
    assert "cannot reach http://127.0.0.1:9" in out
