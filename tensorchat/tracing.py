"""OpenTelemetry tracing for both processes, off unless the standard OTEL_* variables ask.

On when OTEL_TRACES_EXPORTER names an exporter ("otlp", "console"; "none" keeps it off) or,
without it, when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set
(then "otlp"); never when OTEL_SDK_DISABLED=true. Unlike the SDK's own auto-configuration it is
not on by default: a service with no collector should not spend CPU on spans nobody gets.
The SDK reads the rest itself: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (the resource),
OTEL_TRACES_SAMPLER(_ARG) (sampling), OTEL_EXPORTER_OTLP_* (endpoint, headers, TLS, timeout),
OTEL_BSP_* (batching), OTEL_PROPAGATORS (W3C tracecontext and baggage by default). The OTLP
exporter is the gRPC one (port 4317).

While it is off, `tracer()` is None and callers skip every span: tracing then costs one
comparison per request. The trace context travels as W3C `traceparent`/`tracestate`: in HTTP
headers to the facade, in `GenerateRequest.trace_context` (or gRPC metadata on Generate) to the
inference service.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import Tracer, TracerProvider

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

_tracer: Tracer | None = None


def tracer() -> Tracer | None:
    """The tracer, or None while tracing is off."""
    return _tracer


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace with `provider` from now on (None: off). Tests pass an in-memory one."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("tensorchat")


def tracing_requested(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The span exporters the environment asks for; empty: tracing stays off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if named:
        return [name for name in (n.strip() for n in named.split(",")) if name and name != "none"]
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return ["otlp"] if any(environ.get(name) for name in endpoints) else []


def configure_tracing(service_name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Turn tracing on if the environment asks (see the module docstring); True if on."""
    exporters = tracing_requested(environ)
    if not exporters:
        return False
    # Imported only when on: the SDK and the OTLP exporter add to the start time.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, which win.
    provider = SdkTracerProvider(resource=Resource.create({"service.name": service_name}))
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    use_tracer_provider(provider)
    log.info("tracing on: exporting spans to %s", ", ".join(exporters))
    return True


def _exporter(name: str) -> SpanExporter:
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported (otlp, console or none)")


def inject_context(carrier: MutableMapping[str, str]) -> None:
    """Write the current span's W3C context into `carrier` (a dict, headers, a proto map)."""
    propagate.inject(carrier)


def extract_context(carrier: Mapping[str, str] | Iterable[tuple[str, str]]) -> Context:
    """The W3C context in `carrier` (a mapping, or (key, value) pairs such as gRPC metadata)."""
    return propagate.extract(carrier if isinstance(carrier, Mapping) else dict(carrier))
