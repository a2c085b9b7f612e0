"""Traces, when the standard OpenTelemetry settings ask for them (``TracingSettings``): else nothing.

``configure`` sets up the SDK's tracer provider with the exporters named (OTLP over HTTP, which
reads its own ``OTEL_EXPORTER_OTLP_*`` settings, or the console), unless something else already
did (``opentelemetry-instrument``, a test); the HTTP requests get their spans from Litestar's
OpenTelemetry plugin, and the bus carries the context from there on (``app/bus/tracing.py``).
The SDK and the OTLP exporter are the ``tracing`` extra: ``pip install 'ticketing[tracing]'``.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace

from app.settings import SettingsError, TracingSettings


def configure(settings: TracingSettings) -> None:
    """A tracer provider for the process, once, exporting where ``settings`` say."""
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return  # configured already, by whoever started this process
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise SettingsError("OTEL_* ask for traces: pip install 'ticketing[tracing]'") from None
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; what it is given wins.
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": "ticketing"}))
    for name in settings.exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise SettingsError("OTEL_TRACES_EXPORTER=otlp needs the exporter: pip install 'ticketing[tracing]'") from None
    return OTLPSpanExporter()


def http_plugin() -> Any:
    """Litestar's OpenTelemetry plugin: a span for every request, the parent of what it causes."""
    try:
        from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

        return OpenTelemetryPlugin(OpenTelemetryConfig())
    except ImportError:  # Litestar's plugin stands on opentelemetry-instrumentation-asgi
        raise SettingsError("OTEL_* ask for traces: pip install 'ticketing[tracing]'") from None
