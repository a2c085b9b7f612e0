"""``ticketing demo``: the seed's lesson told against the real app, checking every claim it makes."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import IO

import httpx

from app.demo.narrator import ClaimFailed, Narrator, make_console
from app.demo.target import SetupError, Target, in_process, remote
from app.demo.walkthrough import Walkthrough
from app.live.server import StartupFailed

__all__ = ["DemoOptions", "run_demo"]


@dataclass(frozen=True)
class DemoOptions:
    url: str | None = None
    bus: str | None = None
    seed: int = 8
    step: bool = False
    color: bool = True
    ops_token: str | None = None


def run_demo(options: DemoOptions, out: IO[str] | None = None) -> int:
    """0 when every claim held, 1 when one did not, 2 when the demo could not run at all."""
    narrator = Narrator(make_console(options.color, out), step=options.step)
    try:
        asyncio.run(_tell(options, narrator))
    except ClaimFailed:
        narrator.console.print("[bold red]The demo stopped: what it said would happen did not.[/]")
        return 1
    except TimeoutError as exc:
        narrator.console.print(f"[bold red]The demo stopped: it {exc}, in vain.[/]")
        return 1
    except httpx.HTTPError as exc:
        narrator.console.print(f"[bold red]The demo stopped: the app stopped answering ({exc!r}).[/]")
        return 1
    except (SetupError, StartupFailed) as exc:
        narrator.console.print(f"[bold red]The demo could not start:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


async def _tell(options: DemoOptions, narrator: Narrator) -> None:
    async with _target(options) as target:
        walkthrough = Walkthrough(narrator, target, options.seed)
        try:
            await walkthrough.run()
        except (ClaimFailed, TimeoutError):
            if target.logs is not None:
                # What the app said since the last lines shown: usually the reason.
                unseen = target.logs.lines[walkthrough.log_mark :]
                if unseen:
                    narrator.say("[bold]The app's log since then:[/]")
                for line in unseen[-30:]:
                    narrator.log(line)
            raise


def _target(options: DemoOptions) -> contextlib.AbstractAsyncContextManager[Target]:
    if options.url:
        return remote(options.url, options.ops_token or os.environ.get("TICKETING_OPS_TOKEN") or None)
    return in_process(options.bus)
