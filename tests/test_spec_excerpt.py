"""``tests/spec_excerpt.md`` is SPEC.md's own text, where SPEC.md is there to compare with.

The contract lives beside the repository (``../shared/SPEC.md``), which a clone elsewhere does not
have; the tests that read SPEC's tables read the excerpt, and this test keeps it honest.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.test_openapi import ROOT, SPEC

SPEC_MD = Path(os.environ.get("TICKETING_SPEC") or ROOT.parent / "shared" / "SPEC.md")


def excerpt_lines() -> list[str]:
    text = SPEC.read_text()
    body = text.split("-->", 1)[1]
    return [line for line in body.splitlines() if line.strip() and not line.startswith("## ")]


def test_the_excerpt_has_the_tables_the_tests_read() -> None:
    lines = excerpt_lines()
    assert any(line.startswith("| module | owns") for line in lines)
    assert any(line.startswith("| method and path |") for line in lines)
    assert any("A ticket is `" in line for line in lines)


def test_every_line_of_the_excerpt_is_in_spec_md() -> None:
    if not SPEC_MD.is_file():
        return  # a clone away from the steering repository: the excerpt stands alone
    spec = set(SPEC_MD.read_text().splitlines())
    stale = [line for line in excerpt_lines() if line not in spec]
    assert not stale, f"SPEC.md ({SPEC_MD}) no longer says, word for word:\n" + "\n".join(stale)
