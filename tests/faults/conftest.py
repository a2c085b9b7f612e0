"""How long each fault took to settle, printed at the end of the run (the figures the docs quote)."""

from __future__ import annotations

import pytest

_SETTLED: dict[str, float] = {}


@pytest.fixture(scope="session")
def settle_times() -> dict[str, float]:
    return _SETTLED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _SETTLED:
        terminalreporter.section("faults: seconds from the last answer of the load to every process settled")
        for name, seconds in sorted(_SETTLED.items()):
            terminalreporter.write_line(f"{name:40} {seconds:6.2f}")
