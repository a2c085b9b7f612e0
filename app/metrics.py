"""``GET /metrics``: what the bus and the HTTP API have done, in Prometheus text.

- ``ticketing_events_published_total{subject}`` and ``ticketing_deliveries_total{subject,group,outcome}``
  (outcome: applied, duplicate, early, failed, dead) count from the bus's own signals, as they happen;
- ``ticketing_dead_letters``, ``ticketing_pending`` (as ``/ops/bus`` counts it) and
  ``ticketing_outbox_backlog`` (events committed, not yet handed to the bus) are read when scraped
  (``app/bus/metrics.py``);
- ``ticketing_http_requests_total`` and ``ticketing_http_request_duration_seconds`` come from
  Litestar's Prometheus middleware, by route template (so ids do not multiply the series).

With ``ticketing run --workers N`` the workers write their figures to ``PROMETHEUS_MULTIPROC_DIR``
(prometheus_client's multiprocess mode), and whichever answers a scrape adds them all up.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from litestar import Response, get
from litestar.datastructures import State
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from app.bus.metrics import MULTIPROCESS_DIR
from app.common.ops_token import ops_token_guard

if TYPE_CHECKING:
    from app.runtime import Runtime


def http_metrics() -> PrometheusConfig:
    """Litestar's request counts and durations, by route template, under ``ticketing_http_``."""
    return PrometheusConfig(app_name="ticketing", prefix="ticketing_http", group_path=True, exclude=["/metrics"])


def _registry() -> Any:
    if not os.environ.get(MULTIPROCESS_DIR):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


# The same token as /ops, by the same check; the refusal names this route.
require_ops_token = ops_token_guard("Not authorized: /metrics needs Authorization: Bearer $TICKETING_OPS_TOKEN")


@get("/metrics", guards=[require_ops_token], include_in_schema=False, tags=["ops"])
async def metrics(state: State) -> Response[bytes]:
    runtime: Runtime = state.runtime
    await runtime.metrics.refresh()
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)


routes = [metrics]
