"""What the service records about each request: metrics, spans and one access log line.

The runner (inference/runner.py) opens a `RequestObservation` per request and feeds it the
engine's outputs and the choices' ends; at the end it observes vLLM's histograms
(inference/metrics.py), ends the request's span with its queue, prefill and decode phases as
children (from the RequestTimings the engine and runner stamped), and logs one line. Per
output it costs a clock read and a histogram observation; spans cost nothing while tracing is
off (tensorchat/tracing.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import grpc
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

from inference.engines.base import RequestTimings, SequenceOutput
from inference.metrics import InferenceMetrics, ModelMetrics
from inference.prepare import RequestPlan
from tensorchat import tracing
from tensorchat.logs import log_fields
from tensorchat.v1 import inference_pb2 as pb

log = logging.getLogger("tensorchat.inference.access")

# vLLM's finish reasons (stop, length, abort), plus time_limit, which vLLM does not have.
FINISH_REASONS: dict[int, str] = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_STOP_SEQUENCE: "stop",
    pb.FINISH_REASON_STOP_TOKEN: "stop",
    pb.FINISH_REASON_TOOL_CALLS: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_CANCELLED: "abort",
    pb.FINISH_REASON_TIME_LIMIT: "time_limit",
}


class RequestObservation:
    """One request's record, from its arrival at the runner to its end."""

    __slots__ = (
        "_metrics",
        "_model_metrics",
        "_span",
        "_tracer",
        "choices",
        "completion_tokens",
        "model",
        "prompt_tokens",
        "reasons",
        "request_id",
        "status",
        "timings",
    )

    def __init__(self, request: pb.GenerateRequest, metrics: InferenceMetrics | None) -> None:
        self._metrics = metrics
        self._model_metrics: ModelMetrics | None = None  # the model's, once it is known
        self.request_id = request.request_id or "-"
        self.model = request.model
        self.timings = RequestTimings()
        self.status = grpc.StatusCode.OK
        self.choices = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.reasons: list[str] = []
        self._tracer = tracing.tracer()
        self._span: Span | None = None
        if self._tracer is not None:
            parent = tracing.extract_context(request.trace_context)
            self._span = self._tracer.start_span(
                "inference.generate", context=parent, kind=SpanKind.SERVER
            )

    def planned(self, plan: RequestPlan) -> None:
        """The request was admitted: the engine's request carries our clock from now on."""
        plan.engine_request.timings = self.timings
        self.request_id = plan.engine_request.request_id
        self.model = plan.model.id
        self.prompt_tokens = plan.prompt_tokens
        self.choices = plan.engine_request.params.n
        if self._metrics is not None:
            self._model_metrics = self._metrics.model(self.model)

    def outputs(self, outputs: Sequence[SequenceOutput]) -> None:
        """One read of the engine's outputs: first token, time per output token, tokens."""
        new = max((len(output.token_ids) for output in outputs), default=0)
        if not new:
            return
        now = time.monotonic()
        timings, metrics = self.timings, self._model_metrics
        if timings.first_token is None:
            timings.first_token = now
            if metrics is not None:
                metrics.ttft.observe(now - timings.arrived)
                metrics.prompt_tokens.inc(self.prompt_tokens)
        elif metrics is not None and timings.last_token is not None:
            metrics.tpot.observe((now - timings.last_token) / new)
        timings.last_token = now
        if metrics is not None:
            metrics.generation_tokens.inc(sum(len(output.token_ids) for output in outputs))

    def finished(self, finished: pb.Finished) -> None:
        self.reasons.append(FINISH_REASONS.get(finished.reason, "stop"))
        self.completion_tokens += finished.usage.completion_tokens

    def end(self) -> None:
        """Record the request: histograms, spans, the access log line."""
        now = time.monotonic()
        if self.status == grpc.StatusCode.CANCELLED:
            self.reasons += ["abort"] * max(0, self.choices - len(self.reasons))
        if (metrics := self._model_metrics) is not None:  # set once planned
            self._record_metrics(metrics, now)
        trace_id = self._end_span(now) if self._span is not None else None
        timings = self.timings
        ttft = None if timings.first_token is None else timings.first_token - timings.arrived
        log_fields(
            log,
            "generate",
            {
                "request_id": self.request_id,
                "model": self.model,
                "status": self.status.name,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "ttft_s": ttft,
                "duration_s": now - timings.arrived,
                "finish_reason": ",".join(dict.fromkeys(self.reasons)) or None,
                "trace_id": trace_id,
            },
        )

    def _record_metrics(self, metrics: ModelMetrics, now: float) -> None:
        timings = self.timings
        for reason in self.reasons:
            metrics.request_success(reason).inc()
        if self.status != grpc.StatusCode.OK:
            return  # vLLM observes the request histograms of finished requests only
        metrics.e2e.observe(now - timings.arrived)
        metrics.prompt_length.observe(self.prompt_tokens)
        metrics.generation_length.observe(self.completion_tokens)
        scheduled, first, last = timings.scheduled, timings.first_token, timings.last_token
        if scheduled is None or first is None or last is None:
            return  # no token: vLLM leaves the phase histograms out too
        metrics.queue.observe(max(0.0, scheduled - timings.arrived))
        metrics.prefill.observe(max(0.0, first - scheduled))
        metrics.decode.observe(last - first)
        metrics.inference.observe(max(0.0, last - scheduled))

    def _end_span(self, now: float) -> str:
        span, tracer, timings = self._span, self._tracer, self.timings
        assert span is not None and tracer is not None
        # Monotonic seconds -> epoch nanoseconds, the clock spans use.
        offset_ns = time.time_ns() - int(now * 1e9)

        def epoch_ns(moment: float) -> int:
            return int(moment * 1e9) + offset_ns

        parent = set_span_in_context(span)
        phases = (
            ("queue", timings.arrived, timings.scheduled),
            ("prefill", timings.scheduled, timings.first_token),
            ("decode", timings.first_token, timings.last_token),
        )
        for name, start, end in phases:
            if start is not None and end is not None:
                _phase_span(tracer, name, parent, epoch_ns(start), epoch_ns(max(start, end)))
        span.set_attributes(
            {
                "tensorchat.request_id": self.request_id,
                "gen_ai.request.model": self.model,
                "gen_ai.usage.input_tokens": self.prompt_tokens,
                "gen_ai.usage.output_tokens": self.completion_tokens,
                "rpc.grpc.status_code": self.status.value[0],
            }
        )
        if self.reasons:
            span.set_attribute("gen_ai.response.finish_reasons", self.reasons)
        if self.status not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
            span.set_status(Status(StatusCode.ERROR, self.status.name))
        span.end(end_time=epoch_ns(now))
        return format(span.get_span_context().trace_id, "032x")


def _phase_span(tracer: Tracer, name: str, parent: Context, start_ns: int, end_ns: int) -> None:
    span = tracer.start_span(name, context=parent, start_time=start_ns)
    span.end(end_time=end_ns)
