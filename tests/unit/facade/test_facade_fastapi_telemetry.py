"""FastAPI's own OpenTelemetry instrumentation stays off (facade/app.py): the facade traces each
request itself (facade/request_context.py), so a globally configured OpenTelemetry provider
gets no second server span per request from FastAPI."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from facade.app import create_app
from facade.settings import FacadeSettings


async def test_a_global_tracer_provider_gets_no_span_from_fastapi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # As if the process had configured OpenTelemetry globally (the facade never does).
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    settings = FacadeSettings(backends=["127.0.0.1:9"], keys_file=None, api_keys=["k"])
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        live = await client.get("/health/live")
        chat = await client.post("/v1/chat/completions", content=b"{}")
    assert (live.status_code, chat.status_code) == (200, 401)
    assert exporter.get_finished_spans() == ()
