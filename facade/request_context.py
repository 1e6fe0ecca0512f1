"""Each HTTP request's id, span, access log line and response count: a pure ASGI middleware,
outermost, the one place that follows each response's status.

Request ids: the client's `X-Request-Id` when it is 1-128 characters of [A-Za-z0-9._:=+/@-]
(anything else could forge log fields or headers, and is replaced), else `req_<32 hex>`. It is
the `x-request-id` header of every response, errors included (401, 404, 413, 429, 500...; the
431, 408 and 503 that facade/httpguard.py writes before a request exists get a fresh id, its
408 for a body that came too late the request's), and the access log's `request_id`.

The generation on the inference service gets `RequestRecord.generation_id`: the request id
itself when the facade made it (unique), else `<client id>.<8 hex>`. The service refuses a
second running request with the same id, and two clients (or one client's retries) may well
send the same X-Request-Id: the suffix keeps them apart, and a search for the client's id still
finds the lines of both processes.

Tracing (tensorchat/tracing.py, when on): a SERVER span per request, child of the client's
`traceparent` if it sent one, current while the request runs, so that admission puts its
context into the GenerateRequest (facade/admission.py) and the service's spans join it.

The access log: one line per request, after its last byte, with what the routes filled in
(`RequestRecord`: the key's name, never the key; the model; tokens; time to first token; finish
reasons) and the status and duration; escaped by tensorchat/logs.py.

The response count (`tensorchat_facade_requests`, by route template and status): the status a
response ended with where it differs from the one it began with (`RequestRecord.final_status`:
a stream that failed or was cut after its 200), 499 where the client left before it began.
The access log and the span keep the status the client was sent.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, use_span
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facade.errors import unexpected_error
from facade.ids import random_hex
from facade.metrics import FacadeMetrics
from tensorchat import tracing
from tensorchat.logs import log_fields
from tensorchat.v1 import inference_pb2 as pb

log = logging.getLogger("tensorchat.facade.access")

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:=+/@-]{1,128}")
_STATE_KEY = "tensorchat_request"
# The status the connection layer answered a request with after cutting its app off (a body
# that did not arrive in time: facade/httpguard.py), set in its scope. The app sees the client
# leave; the count, span and access log take this status, which is what the client was sent.
ANSWERED_BY_SERVER = "tensorchat.answered_by_server"


@dataclass(slots=True)
class RequestRecord:
    """One HTTP request as the access log and the generation see it; routes fill it in."""

    request_id: str
    generation_id: str
    started: float = field(default_factory=time.perf_counter)
    key: str | None = None  # the API key's name
    model: str | None = None
    user: str | None = None  # the request's `user`: client text, escaped by the log format
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    finish_reasons: list[str] = field(default_factory=list)
    # The status the request is counted under when its response ended otherwise than it
    # began (a stream that failed or was cut after its 200, a client that left); routes set it.
    final_status: int | None = None

    @classmethod
    def from_client_id(cls, client_id: str | None) -> RequestRecord:
        if client_id is not None and _VALID_REQUEST_ID.fullmatch(client_id):
            return cls(client_id, f"{client_id}.{random_hex(4)}")
        request_id = new_request_id()
        return cls(request_id, request_id)


def new_request_id() -> str:
    return f"req_{random_hex()}"


def reason_name(reason: int) -> str:
    """The protocol's finish reason as the access log writes it: "stop_sequence", "length"..."""
    return pb.FinishReason.Name(reason).removeprefix("FINISH_REASON_").lower()  # type: ignore[arg-type]


def scope_record(scope: Scope) -> RequestRecord | None:
    """The record the middleware made for the request of `scope`, if it has run."""
    record: RequestRecord | None = scope.get("state", {}).get(_STATE_KEY)
    return record


def request_record(request: Request) -> RequestRecord:
    """The record the middleware made for `request` (a fresh one where there is none)."""
    record = scope_record(request.scope)
    return record if record is not None else RequestRecord.from_client_id(None)


class RequestContext:
    """Gives each request its id, span, access log line and count (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, metrics: FacadeMetrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        # The counter's child per (route template, status), looked up once: `labels` costs
        # about 1.3 µs a call against 0.4 for the cached child's `inc` (timeit). Bounded by
        # the routes and the statuses they answer.
        self._counters: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        client_id = next((v for k, v in headers if k == REQUEST_ID_HEADER), None)
        record = RequestRecord.from_client_id(
            None if client_id is None else client_id.decode("latin-1")
        )
        scope.setdefault("state", {})[_STATE_KEY] = record
        id_header = (REQUEST_ID_HEADER, record.request_id.encode())
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                others = [h for h in message.get("headers", ()) if h[0] != REQUEST_ID_HEADER]
                message["headers"] = [*others, id_header]
            await send(message)

        tracer = tracing.tracer()
        span: Span | None = None
        if tracer is not None:
            parent = tracing.extract_context(
                (key.decode("latin-1"), value.decode("latin-1")) for key, value in headers
            )
            span = tracer.start_span(
                f"{scope['method']} {scope['path']}",
                context=parent,
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": scope["method"],
                    "url.path": scope["path"],
                    "tensorchat.request_id": record.request_id,
                },
            )
        try:
            if span is None:
                await self.app(scope, receive, send_with_id)
            else:
                with use_span(span, end_on_exit=False):
                    await self.app(scope, receive, send_with_id)
        except Exception:
            if not status:
                # Answered here rather than by Starlette's outermost error middleware, so that
                # the 500 carries the id too; that middleware still logs the error.
                await unexpected_error().response()(scope, receive, send_with_id)
            raise
        finally:
            # Cut off by the connection layer, which answered; else, with nothing sent and
            # nothing raised, the client left before the response began.
            status = scope.get(ANSWERED_BY_SERVER) or status or 499
            route = getattr(scope.get("route"), "path", None)
            self._count(route or "unmatched", record.final_status or status)
            if span is not None:
                _end_span(span, scope["method"], route, status, record)
            if self.access_log:
                _log_access(scope, route, status, record)

    def _count(self, route: str, status: int) -> None:
        counter = self._counters.get((route, status))
        if counter is None:
            counter = self._counters[(route, status)] = self.metrics.requests.labels(
                route, str(status)
            )
        counter.inc()


def _end_span(
    span: Span, method: str, route: str | None, status: int, record: RequestRecord
) -> None:
    if route is not None:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if record.model is not None:
        span.set_attribute("gen_ai.request.model", record.model)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def _log_access(scope: Scope, route: str | None, status: int, record: RequestRecord) -> None:
    log_fields(
        log,
        "http",
        {
            "request_id": record.request_id,
            "method": scope["method"],
            "path": route or scope["path"],
            "status": status,
            "key": record.key,
            "model": record.model,
            "user": record.user,
            "generation_id": record.generation_id if record.model is not None else None,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "ttft_s": record.ttft_s,
            "duration_s": time.perf_counter() - record.started,
            "finish_reason": ",".join(dict.fromkeys(record.finish_reasons)) or None,
        },
    )
