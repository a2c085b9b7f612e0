"""SPEC's "The door": what every request meets before a handler, and what every answer carries."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from app import metrics, ops
from app.common.ops_token import ops_token_guard
from app.live.routes import events as live_events
from app.settings import Settings
from tests.conftest import AppFactory, make_settings
from tests.deployments import Api

OPS_TOKEN = "let-me-in"


@pytest.fixture
def guarded(start_app: AppFactory, database_url: str) -> Callable[..., Any]:
    """An app whose settings differ from the tests' usual ones by ``auth`` fields."""

    @asynccontextmanager
    async def start(**auth: Any) -> AsyncIterator[Api]:
        settings = make_settings(database_url, "memory://")
        changed = Settings(
            database=settings.database,
            bus=settings.bus,
            auth=dataclasses.replace(settings.auth, **auth),
            modules=settings.modules,
        )
        async with start_app(settings=changed) as api:
            yield api

    return start


# ---- one ops token, one check -------------------------------------------------------------------

# Each guarded route, and the words its refusal uses for itself.
OPS_ROUTES = {"/ops/bus": "/ops needs", "/metrics": "/metrics needs", "/demo/events": "/demo/events needs"}


async def test_each_ops_token_route_refuses_a_missing_or_wrong_token_naming_itself(guarded: Callable[..., Any]) -> None:
    async with guarded(ops_token=OPS_TOKEN) as api:
        for path, words in OPS_ROUTES.items():
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {OPS_TOKEN}"}):
                refused = await api.http.get(path, headers=headers)
                assert refused.status_code == 401, (path, headers)
                (error,) = refused.json()["errors"]
                assert error["message"].startswith("Not authorized") and words in error["message"], (path, error)
        # The stream alone also reads ?token= (EventSource sends no headers), and it must be right.
        assert (await api.http.get("/demo/events", params={"token": "wrong"})).status_code == 401
        assert (await api.http.get("/ops/bus", params={"token": OPS_TOKEN})).status_code == 401
        for path in ("/ops/bus", "/metrics"):
            assert (await api.http.get(path, headers={"Authorization": f"Bearer {OPS_TOKEN}"})).status_code == 200


async def test_ops_token_routes_are_open_when_no_token_is_set(guarded: Callable[..., Any]) -> None:
    async with guarded(ops_token=None) as api:
        for path in ("/ops/bus", "/metrics"):
            assert (await api.http.get(path)).status_code == 200, path


def test_ops_metrics_and_the_live_stream_share_one_token_check() -> None:
    # The same check, not three that look alike: each guard is a closure of ops_token_guard.
    check = ops_token_guard("any").__code__
    handlers = [ops.bus_counters, ops.dead_letters, ops.replay_dead_letter, metrics.metrics, live_events]
    for handler in handlers:
        assert [guard.__code__ for guard in handler.guards or []] == [check], handler
