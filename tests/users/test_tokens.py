"""Tokens: what they accept, and that remembering verified ones never outlives their expiry."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest

from app.common.auth import CurrentUser, Tokens
from app.main import create_app
from app.settings import Settings

ADA = CurrentUser("ada-id", "ada@example.com")


def test_a_token_reads_back_as_its_user() -> None:
    tokens = Tokens("a-secret-of-thirty-two-bytes-len")
    assert tokens.read(tokens.issue(ADA)) == ADA


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    now = [time.time()]
    tokens = Tokens("a-secret-of-thirty-two-bytes-len", ttl=timedelta(minutes=5), clock=lambda: now[0])
    token = tokens.issue(ADA)
    assert tokens.read(token) == ADA
    assert tokens.read(token) == ADA  # now from memory
    now[0] += 301
    assert tokens.read(token) is None
    assert tokens.read(token) is None, "and not remembered again"


def test_an_expired_token_is_refused_even_the_first_time() -> None:
    now = [time.time()]
    tokens = Tokens("a-secret-of-thirty-two-bytes-len", ttl=timedelta(seconds=10), clock=lambda: now[0])
    token = tokens.issue(ADA)
    now[0] += 11
    assert tokens.read(token) is None


def test_remembering_is_bounded() -> None:
    tokens = Tokens("a-secret-of-thirty-two-bytes-len", remember=3)
    issued = [tokens.issue(CurrentUser(f"user-{n}", f"u{n}@example.com")) for n in range(10)]
    assert all(tokens.read(token) is not None for token in issued)
    assert len(tokens._verified) == 3


def test_another_key_never_reads_a_remembered_token() -> None:
    ours, theirs = Tokens("a-secret-of-thirty-two-bytes-len"), Tokens("another-secret-thirty-two-bytes!")
    token = theirs.issue(ADA)
    assert theirs.read(token) == ADA
    assert ours.read(token) is None


def test_a_short_secret_is_warned_about_at_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ticketing"):
        create_app(Settings.from_env({"TICKETING_JWT_SECRET": "too-short"}))
    assert any("shorter than 32 bytes" in record.getMessage() for record in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ticketing"):
        create_app(Settings.from_env({"TICKETING_JWT_SECRET": "x" * 32}))
    assert not any("TICKETING_JWT_SECRET" in record.getMessage() for record in caplog.records)
