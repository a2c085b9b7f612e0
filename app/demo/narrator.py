"""How the demo talks: headings, narration, HTTP calls, log lines, and claims it checks."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.live.feed import FeedEvent

_STYLE = {"published": "blue", "applied": "green", "retried": "yellow", "duplicate": "dim", "dead-lettered": "red"}
_WORDS = {
    "applied": "applied",
    "duplicate": "a duplicate: acknowledged, nothing changed",
    "retried": "came early: refused, it comes again",
    "dead-lettered": "dead-lettered: given up on",
}


class ClaimFailed(AssertionError):
    """Something the demo said would happen did not."""


def make_console(color: bool, file: IO[str] | None = None) -> Console:
    # NO_COLOR (https://no-color.org) and a non-terminal output turn colour off as well;
    # rich already does both, --no-color makes it explicit. soft_wrap keeps long lines
    # (ids, log lines) whole, so that they can be searched for in a CI log.
    plain = not color or bool(os.environ.get("NO_COLOR"))
    return Console(
        file=file or sys.stdout,
        color_system=None if plain else "auto",
        no_color=plain,
        highlight=False,
        soft_wrap=True,
        emoji=False,
    )


class Narrator:
    def __init__(self, console: Console, *, step: bool = False) -> None:
        self.console = console
        self.step = step
        self.claims = 0

    def title(self, text: str) -> None:
        self.console.rule(f"[bold]{escape(text)}[/]", style="magenta")

    def heading(self, number: str, text: str) -> None:
        self.console.print()
        self.console.print(f"[bold magenta]{escape(number)}[/] [bold]{escape(text)}[/]")

    def say(self, text: str) -> None:
        """Narration; ``text`` may use rich markup, so callers escape what they did not write."""
        self.console.print(f"  {text}")

    def note(self, text: str) -> None:
        self.console.print(f"  [dim]{text}[/]")

    def http(self, method: str, path: str, status: int, shown: Any = None, sent: Any = None) -> None:
        colour = "green" if status < 400 else "yellow" if status < 500 else "red"
        body = f" {escape(_compact(sent))}" if sent is not None else ""
        self.console.print(f"  [bold cyan]{method}[/] {escape(path)}{body}  →  [bold {colour}]{status}[/]")
        if shown is not None:
            self.console.print(f"      [dim]{escape(_compact(shown))}[/]")

    def log(self, line: str) -> None:
        """A line of the app's own log, as the seed's terminal showed it."""
        self.console.print(f"    [dim]log │[/] [yellow]{escape(line)}[/]")

    def bus_event(self, event: FeedEvent) -> None:
        """What the bus did, in one line: a publication, or one delivery and what it came to."""
        version = f"v{event.version}" if event.version is not None else "v?"
        if event.result == "published":
            line = f"{event.source} published {event.subject} {version}"
        else:
            attempt = f", attempt {event.attempt}" if event.attempt and event.attempt > 1 else ""
            line = f"{event.group} ← {event.subject} {version}{attempt}: {_WORDS[event.result]}"
        self.console.print(f"    [dim]bus │[/] [{_STYLE[event.result]}]{escape(line)}[/]")

    def table(self, table: Table) -> None:
        self.console.print(table)

    def check(self, holds: bool, claim: str, detail: str = "") -> None:
        """Show a claim as checked; stop the story if it did not hold."""
        self.claims += 1
        if holds:
            self.console.print(f"  [bold green]✔[/] {escape(claim)}")
            return
        self.console.print(f"  [bold red]✘ {escape(claim)}[/]")
        if detail:
            self.console.print(f"    [red]{escape(detail)}[/]")
        raise ClaimFailed(claim + (f": {detail}" if detail else ""))

    async def pause(self) -> None:
        if not self.step:
            return
        self.console.print("  [dim]… press Enter to go on[/]", end="")
        # In a thread, so that the app keeps serving (and the bus delivering) while we wait.
        await asyncio.to_thread(_read_line)


def _read_line() -> None:
    try:
        sys.stdin.readline()
    except (OSError, ValueError):  # no usable stdin (closed, detached): just go on
        return


def _compact(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def money(value: Any) -> str:
    return f"{float(value):.2f}"
