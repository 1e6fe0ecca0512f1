"""Observability across the stack (issue 19): the real inference service (synthetic engine, so
that no model computes) behind the real facade, on loopback.

- one chat request makes one trace: the facade's HTTP span, the service's generation span as
  its child, and the queue, prefill and decode phases under that (in-memory exporter);
- every metric the shipped Grafana dashboard queries is exported after one request;
- x-request-id on every response (errors too), the client's when safe, and two clients' equal
  ids do not collide on the service;
- one access log line per request in each process, with the key's name and never the key.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from facade.settings import FacadeSettings
from tensorchat import tracing
from tests.integration.conftest import synthetic_models_config
from tests.support.servers import FacadeServerThread, InferenceServerThread
from tests.support.waiting import eventually

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "tensorchat.json"
MODEL = "obs-model"
API_KEY = "tc-observability-test-key"


@pytest.fixture(scope="module")
def stack(tiny_qwen2_dir: Path) -> Iterator[tuple[InferenceServerThread, FacadeServerThread]]:
    config = synthetic_models_config(MODEL, tiny_qwen2_dir)
    inference = InferenceServerThread(config, metrics_port=0).start()
    settings = FacadeSettings(backends=[inference.address], keys_file=None, api_keys=[API_KEY])
    facade = FacadeServerThread(settings).start()
    try:
        yield inference, facade
    finally:
        facade.stop()
        inference.stop()


@pytest.fixture()
def http(stack: tuple[InferenceServerThread, FacadeServerThread]) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=stack[1].url + "/v1", headers=headers, timeout=30) as client:
        yield client


@pytest.fixture()
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_tracer_provider(None)


def chat(**fields: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}


def test_one_chat_request_is_one_trace_across_facade_and_service(
    http: httpx.Client, spans: InMemorySpanExporter
) -> None:
    response = http.post("/chat/completions", json=chat(max_tokens=4))
    assert response.status_code == 200
    eventually(lambda: len(spans.get_finished_spans()) >= 5)
    by_name = {span.name: span for span in spans.get_finished_spans()}
    assert {"POST /v1/chat/completions", "inference.generate", "queue", "prefill", "decode"} <= (
        set(by_name)
    )
    http_span, generate = by_name["POST /v1/chat/completions"], by_name["inference.generate"]
    assert len({span.context.trace_id for span in by_name.values()}) == 1
    assert http_span.parent is None  # the client sent no traceparent
    assert generate.parent is not None and generate.parent.span_id == http_span.context.span_id
    for phase in ("queue", "prefill", "decode"):
        parent = by_name[phase].parent
        assert parent is not None and parent.span_id == generate.context.span_id
    # The phases follow each other: queue ends where prefill starts, prefill where decode does.
    queue, prefill, decode = by_name["queue"], by_name["prefill"], by_name["decode"]
    assert queue.end_time == prefill.start_time and prefill.end_time == decode.start_time
    assert generate.attributes is not None
    assert generate.attributes["gen_ai.usage.output_tokens"] == 4
    assert http_span.attributes is not None
    assert http_span.attributes["tensorchat.request_id"] == response.headers["x-request-id"]


def test_a_client_traceparent_becomes_the_parent(
    http: httpx.Client, spans: InMemorySpanExporter
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traceparent = f"00-{trace_id}-{parent_id}-01"
    response = http.post(
        "/chat/completions", json=chat(max_tokens=2), headers={"traceparent": traceparent}
    )
    assert response.status_code == 200
    eventually(lambda: len(spans.get_finished_spans()) >= 5)
    finished = spans.get_finished_spans()
    assert finished and all(format(span.context.trace_id, "032x") == trace_id for span in finished)


def test_every_dashboard_query_names_an_exported_metric(
    stack: tuple[InferenceServerThread, FacadeServerThread], http: httpx.Client
) -> None:
    assert http.post("/chat/completions", json=chat(max_tokens=3)).status_code == 200
    inference, facade = stack
    assert inference.server is not None
    scraped = httpx.get(f"http://127.0.0.1:{inference.server.metrics_port}/metrics").text
    scraped += httpx.get(f"{facade.url}/metrics").text
    exported = {
        sample.name
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    }
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\btensorchat_[A-Za-z0-9_]+", target["expr"])
    }
    queried |= set(re.findall(r"\btensorchat_[A-Za-z0-9_]+", json.dumps(dashboard["templating"])))
    assert len(queried) >= 15  # the parse found the queries
    assert queried <= exported, sorted(queried - exported)
    # vLLM's meanings: the request's model is the label, and the engine's load is exported.
    assert f'tensorchat_inference_num_requests_running{{model_name="{MODEL}"}}' in scraped
    assert 'tensorchat_inference_request_success_total{finished_reason="length"' in scraped


def test_every_response_carries_a_request_id(
    stack: tuple[InferenceServerThread, FacadeServerThread], http: httpx.Client
) -> None:
    base = stack[1].url
    refusals = [
        httpx.post(f"{base}/v1/chat/completions", json=chat()),  # 401: no key
        http.get("/nowhere"),  # 404
        http.post("/chat/completions", json=chat(n=0)),  # 400
        http.post("/chat/completions", json=chat(model="no-such-model")),  # 404 model
    ]
    # 431 is written by the connection guard before any request reaches the app.
    oversized = {"x-big": "a" * (stack[1].settings.max_header_bytes + 1)}
    refusals.append(httpx.get(f"{base}/v1/models", headers=oversized))
    assert [r.status_code for r in refusals] == [401, 404, 400, 404, 431]
    for response in [*refusals, http.get("/models")]:
        assert re.fullmatch(r"req_[0-9a-f]{32}", response.headers["x-request-id"]), response


def test_a_client_request_id_is_kept_when_safe_and_replaced_when_not(
    http: httpx.Client,
) -> None:
    kept = http.post(
        "/chat/completions", json=chat(max_tokens=2), headers={"x-request-id": "client-42.a"}
    )
    assert kept.status_code == 200 and kept.headers["x-request-id"] == "client-42.a"
    unsafe = 'bad" id=forged'
    replaced = http.get("/models", headers={"x-request-id": unsafe})
    assert replaced.headers["x-request-id"].startswith("req_")
    too_long = http.get("/models", headers={"x-request-id": "a" * 129})
    assert too_long.headers["x-request-id"].startswith("req_")


def test_clients_reusing_one_request_id_do_not_collide(http: httpx.Client) -> None:
    # The service refuses two running generations with one id; the facade suffixes clients'.
    def post(_: int) -> httpx.Response:
        body = chat(max_tokens=40, ignore_eos=True)
        return http.post("/chat/completions", json=body, headers={"x-request-id": "same"})

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(post, range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    assert {r.headers["x-request-id"] for r in responses} == {"same"}


def test_each_process_logs_one_access_line_per_request(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tensorchat"):
        response = http.post(
            "/chat/completions", json=chat(max_tokens=3), headers={"x-request-id": "trace-me"}
        )
        http.get("/nowhere", headers={"x-request-id": "trace-me-404"})
        eventually(lambda: sum(r.name == "tensorchat.facade.access" for r in caplog.records) >= 2)
    assert response.status_code == 200
    facade_lines = [r for r in caplog.records if r.name == "tensorchat.facade.access"]
    service_lines = [r for r in caplog.records if r.name == "tensorchat.inference.access"]
    ok, missing = (
        next(r.fields for r in facade_lines if r.fields["request_id"] == rid)  # type: ignore[attr-defined]
        for rid in ("trace-me", "trace-me-404")
    )
    assert ok["status"] == 200 and ok["key"] == "env-key-1" and ok["model"] == MODEL
    assert ok["completion_tokens"] == 3 and ok["finish_reason"] == "length"
    assert ok["ttft_s"] is not None and ok["prompt_tokens"] > 0
    assert missing["status"] == 404 and missing["model"] is None
    generation_id = ok["generation_id"]
    assert generation_id.startswith("trace-me.")
    (service,) = [r.fields for r in service_lines if r.fields["request_id"] == generation_id]  # type: ignore[attr-defined]
    assert service["status"] == "OK" and service["completion_tokens"] == 3
    assert service["finish_reason"] == "length" and service["ttft_s"] is not None
    assert all(API_KEY not in r.getMessage() + str(r.__dict__) for r in caplog.records)


def test_a_text_completion_of_two_prompts_is_one_trace_and_one_access_line(
    http: httpx.Client, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    # /v1/completions runs like chat (facade/generation_run.py): the request id, one access
    # line, and each prompt's generation a child of the request's span.
    body = {"model": MODEL, "prompt": ["hi", "ho"], "max_tokens": 3, "user": "u-7"}
    with caplog.at_level(logging.INFO, logger="tensorchat"):
        response = http.post("/completions", json=body, headers={"x-request-id": "two-prompts"})
        eventually(lambda: any(r.name == "tensorchat.facade.access" for r in caplog.records))
        eventually(lambda: len(spans.get_finished_spans()) >= 9)
    assert response.status_code == 200 and response.headers["x-request-id"] == "two-prompts"
    (line,) = [r.fields for r in caplog.records if r.name == "tensorchat.facade.access"]  # type: ignore[attr-defined]
    assert line["request_id"] == "two-prompts" and line["path"] == "/v1/completions"
    assert line["status"] == 200 and line["key"] == "env-key-1" and line["model"] == MODEL
    assert line["user"] == "u-7" and line["finish_reason"] == "length"
    assert line["completion_tokens"] == 6 and line["prompt_tokens"] > 0
    generation_id = line["generation_id"]
    service_ids = {
        r.fields["request_id"]  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "tensorchat.inference.access"
    }
    assert service_ids == {f"{generation_id}-0", f"{generation_id}-1"}
    finished = spans.get_finished_spans()
    (http_span,) = [span for span in finished if span.name == "POST /v1/completions"]
    generations = [span for span in finished if span.name == "inference.generate"]
    assert len(generations) == 2
    for generate in generations:
        assert generate.parent is not None and generate.parent.span_id == http_span.context.span_id
