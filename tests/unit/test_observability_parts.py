"""The parts of issue 19 that need no server: log formats and escaping, when tracing turns on,
TensorRT-LLM's scheduling stamp, vLLM's length buckets."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest

from inference.engines.trtllm.timing import first_scheduled_at
from inference.metrics import one_two_five_buckets
from tensorchat.logs import LOG_FORMAT, JsonFormatter, TextFormatter
from tensorchat.tracing import tracing_requested
from tests.fakes.tensorrt_llm.bindings.executor import RequestPerfMetrics

FORGED = 'gpt" status=200 key=admin\n2026-01-01 INFO forged line'


def record_with(fields: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord(
        "tensorchat.facade.access", logging.INFO, __file__, 1, "http", (), None
    )
    record.fields = fields
    return record


def test_text_access_lines_quote_client_strings_so_nothing_can_be_forged() -> None:
    fields = {"request_id": "req_1", "model": FORGED, "ttft_s": 0.25, "key": None}
    line = TextFormatter(LOG_FORMAT).format(record_with(fields))
    assert "\n" not in line
    assert line.endswith(f"http request_id=req_1 model={json.dumps(FORGED)} ttft_s=0.2500 key=-")
    assert " status=200" not in line.replace(json.dumps(FORGED), "")


def test_json_access_lines_carry_the_fields_as_keys() -> None:
    fields = {"request_id": "req_1", "model": FORGED, "status": 200}
    line = JsonFormatter().format(record_with(fields))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "http" and parsed["logger"] == "tensorchat.facade.access"
    assert {key: parsed[key] for key in fields} == fields


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "x"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
    ],
)
def test_tracing_is_off_unless_the_otel_variables_ask(
    environ: dict[str, str], exporters: list[str]
) -> None:
    assert tracing_requested(environ) == exporters


def test_trtllm_first_scheduled_time_is_the_executors_own_stamp() -> None:
    metrics = RequestPerfMetrics()
    stamp = time.monotonic() - 5.0  # scheduled a while before the result was read
    metrics.timing_metrics.first_scheduled_time = timedelta(seconds=stamp)
    result = SimpleNamespace(request_perf_metrics=metrics)
    assert first_scheduled_at(result) == pytest.approx(stamp, abs=1e-6)


@pytest.mark.parametrize("metrics", [None, RequestPerfMetrics()])  # none, or the epoch (unset)
def test_without_a_stamp_the_first_result_marks_the_scheduling(
    metrics: RequestPerfMetrics | None,
) -> None:
    before = time.monotonic()
    at = first_scheduled_at(SimpleNamespace(request_perf_metrics=metrics))
    assert before <= at <= time.monotonic()


def test_length_buckets_are_vllms_1_2_5_series_up_to_the_context() -> None:
    assert one_two_five_buckets(256) == [1, 2, 5, 10, 20, 50, 100, 200]
    assert one_two_five_buckets(1) == [1]
