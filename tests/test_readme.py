"""The README's promises: its two commands come first, and CI runs the test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_opens_with_the_run_and_test_commands() -> None:
    run, test = readme_commands()[:2]
    assert run.startswith("python3 -m venv .venv") and run.endswith("ticketing run")
    assert test.startswith("python3 -m venv .venv") and "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test = readme_commands()[1]
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()
