"""POST /v1/chat/completions (and the other base URLs clients use): admit, generate, reply.

The handler authenticates, validates, resolves the model and takes the caller's rate-limit
lease; everything that can fail before generation becomes a 4xx/5xx envelope there. It then
returns a `ChatRun`, an ASGI response that owns the generation (a `facade.multiplex.Generation`,
read like a Generate call): it waits for the first message before sending a status (so an
error the inference service finds, such as a context overflow, still gets its own status),
streams or collects the rest, and cancels the generation the moment the client disconnects.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from facade.auth import Principal
from facade.backends import Backend, ModelEntry
from facade.deps import FacadeState, get_state, require_principal
from facade.errors import APIError, from_grpc, from_validation, model_not_found, rate_limited
from facade.limits import Lease, RateLimitExceeded, estimate_tokens
from facade.multiplex import EOF, Generation
from facade.schemas import ChatCompletion, ChatCompletionRequest, ErrorResponse
from facade.sse import DONE, SSE_HEADERS, DisconnectWatcher, error_event
from facade.translate import (
    FINISH_REASONS,
    ChunkEncoder,
    CompletionBuilder,
    UsageCounter,
    logprobs_content,
    to_generate_request,
)
from tensorchat.v1 import inference_pb2 as pb

log = logging.getLogger(__name__)

router = APIRouter()

# The documented path first; the others are what the seeds' clients' base URLs produce.
CHAT_PATHS = (
    "/v1/chat/completions",
    "/chat/completions",
    "/api/v1/chat/completions",
    "/v1/chat/completions/chat/completions",
)
# Past the generation time limit, give the service this long to report the finish itself.
_DEADLINE_SLACK_S = 30.0


async def create_chat_completion(
    request: Request,
    principal: Annotated[Principal, Depends(require_principal)],
    state: Annotated[FacadeState, Depends(get_state)],
) -> Response:
    """Creates a model response for the given chat conversation (OpenAI-compatible)."""
    started = time.perf_counter()
    # Parsed here rather than as a body parameter so that a bad key is a 401 before any
    # body is looked at, and pydantic parses the JSON itself (strict, one pass).
    try:
        req = ChatCompletionRequest.model_validate_json(await request.body())
    except ValidationError as error:
        raise from_validation(error) from None
    settings = state.settings
    if req.n > settings.max_n:
        raise APIError(
            400, f"Invalid 'n': at most {settings.max_n} choices per request.", param="n"
        )
    if req.stream_options is not None and not req.stream:
        raise APIError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    if req.top_logprobs and not req.logprobs:
        raise APIError(
            400, "'logprobs' must be set to true when 'top_logprobs' is used.", param="top_logprobs"
        )
    entry = state.pool.resolve(req.model)
    if not principal.allows(entry.id, entry.aliases):
        raise model_not_found(req.model)
    limit = req.completion_limit
    if limit is not None and entry.info.max_output_tokens and limit > entry.info.max_output_tokens:
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        raise APIError(
            400,
            f"Invalid '{param}': {limit} is more than this model's "
            f"{entry.info.max_output_tokens} completion tokens.",
            param=param,
        )

    prompt_chars = sum(len(m.content) for m in req.messages)
    try:
        state.gate.enter()
    except RateLimitExceeded as error:
        raise rate_limited(error.message, error.retry_after_s, code="server_overloaded") from None
    try:
        lease = await state.limiter.acquire(
            principal.name, principal.limits, estimate_tokens(prompt_chars, limit, req.n)
        )
    except RateLimitExceeded as error:
        state.gate.exit()
        state.metrics.rate_limited.labels(principal.metric_label).inc()
        raise rate_limited(error.message, error.retry_after_s) from None
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    time_limit_ms = int(settings.request_time_limit_s * 1000)
    try:
        rpc = to_generate_request(req, entry.id, request_id, time_limit_ms=time_limit_ms)
    except Exception:
        # Nothing ran: give back the slot and the whole token charge.
        state.gate.exit()
        await lease.release(0)
        raise
    return ChatRun(state, principal, req, entry, rpc, lease, started)


for _path in CHAT_PATHS:
    router.add_api_route(
        _path,
        create_chat_completion,
        methods=["POST"],
        include_in_schema=_path == CHAT_PATHS[0],
        response_model=None,
        responses={
            200: {"model": ChatCompletion, "description": "A completion, or an SSE stream"},
            400: {"model": ErrorResponse},
            401: {"model": ErrorResponse},
            404: {"model": ErrorResponse},
            429: {"model": ErrorResponse},
            503: {"model": ErrorResponse},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
        summary="Create chat completion",
    )


class ChatRun(Response):
    """The ASGI response that runs one admitted chat request on a backend."""

    def __init__(
        self,
        state: FacadeState,
        principal: Principal,
        req: ChatCompletionRequest,
        entry: ModelEntry,
        rpc: pb.GenerateRequest,
        lease: Lease,
        started: float,
    ) -> None:
        super().__init__(status_code=200)
        self.state = state
        self.principal = principal
        self.req = req
        self.entry = entry
        self.rpc = rpc
        self.lease = lease
        self.started = started
        self.created = int(time.time())
        self.usage = UsageCounter()
        self.status = 0
        self.first_token_at: float | None = None
        self._call: Generation | None = None
        self._done = False
        self._began = False  # a 200 went out
        self._extra_headers = [(b"x-request-id", rpc.request_id.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = DisconnectWatcher(receive, self._cancel_rpc)
        watcher.start()
        self.state.metrics.in_flight.inc()
        finished = False
        try:
            await self._run(send, watcher)
            finished = True
        except asyncio.CancelledError:
            # A cancelled read means our own cancel after a disconnect; anything else
            # (server shutdown) propagates.
            if not watcher.disconnected:
                raise
        finally:
            self._done = True
            watcher.stop()
            if self._call is not None and not self._call.done():
                self._call.cancel()
            if watcher.disconnected and not finished:
                self.status = 499
            self.state.gate.exit()
            self.state.metrics.in_flight.dec()
            await self.lease.release(self._tokens_used())
            self._record()

    def _tokens_used(self) -> int | None:
        """What the key is charged: real usage, nothing for a refusal, else the estimate."""
        if self.usage.prompt_tokens:
            return self.usage.total_tokens
        if self.status >= 400 and self.status != 499 and not self._began:
            return 0  # refused before any generation (context overflow, overload, ...)
        return None  # cut short without a usage report: keep the admission estimate

    def _cancel_rpc(self) -> None:
        if not self._done and self._call is not None:
            self._call.cancel()

    async def _run(self, send: Send, watcher: DisconnectWatcher) -> None:
        pool = self.state.pool
        candidates = pool.candidates(self.entry.id)
        if not candidates:
            await self._send_error(
                send,
                APIError(
                    503,
                    f"No backend is serving `{self.req.model}` right now; please retry shortly.",
                    headers={"Retry-After": "1"},
                ),
            )
            return
        limit = self.state.settings.request_time_limit_s
        timeout = limit + _DEADLINE_SLACK_S if limit else None
        for attempt, backend in enumerate(candidates):
            with pool.use(backend):
                call = await backend.generations.start(self.rpc, timeout)
                self._call = call
                if watcher.disconnected:
                    call.cancel()
                try:
                    first = await call.read()
                except grpc.aio.AioRpcError as error:
                    if self._retryable(error, backend) and attempt + 1 < len(candidates):
                        continue
                    await self._send_error(
                        send, from_grpc(error, self.rpc.request_id, self.req.model)
                    )
                    return
                if self.req.stream:
                    await self._stream(send, call, first)
                else:
                    await self._complete(send, call, first)
                return

    def _retryable(self, error: grpc.aio.AioRpcError, backend: Backend) -> bool:
        # UNAVAILABLE before any message: the request never reached a model, so another
        # replica can take it; the failed one leaves routing until it answers a probe.
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            return False
        self.state.pool.mark_down(backend, error.details() or "UNAVAILABLE")
        return True

    async def _send_error(self, send: Send, error: APIError) -> None:
        self.status = error.status
        headers = [(b"content-type", b"application/json"), *self._extra_headers]
        headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": error.body(), "more_body": False})

    async def _complete(
        self,
        send: Send,
        call: Generation,
        first: Any,
    ) -> None:
        builder = CompletionBuilder(self.req.n, bool(self.req.logprobs))
        message = first
        try:
            while message is not EOF:
                if self.first_token_at is None and message.HasField("delta"):
                    self.first_token_at = time.perf_counter()
                builder.add(message)
                message = await call.read()
        except grpc.aio.AioRpcError as error:
            await self._send_error(send, from_grpc(error, self.rpc.request_id, self.req.model))
            return
        self.usage = builder.usage
        body = (
            ChatCompletion.model_validate(
                builder.to_json(
                    self.rpc.request_id, self.created, self.req.model, self.entry.fingerprint
                )
            )
            .model_dump_json()
            .encode()
        )
        self.status = 200
        self._began = True
        headers = [(b"content-type", b"application/json"), *self._extra_headers]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _stream(
        self,
        send: Send,
        call: Generation,
        first: Any,
    ) -> None:
        req = self.req
        encoder = ChunkEncoder(
            self.rpc.request_id,
            self.created,
            req.model,
            self.entry.fingerprint,
            req.include_usage,
        )
        want_logprobs = bool(req.logprobs)
        self.status = 200
        self._began = True
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*SSE_HEADERS, *self._extra_headers],
            }
        )
        # The role chunks go out with the first content, in one write.
        pending = b"".join(encoder.role(i) for i in range(req.n))
        usage = self.usage
        message = first
        try:
            while message is not EOF:
                if message.HasField("delta"):
                    delta = message.delta
                    if delta.text or delta.logprobs:
                        if self.first_token_at is None:
                            self.first_token_at = time.perf_counter()
                        lps = logprobs_content(delta.logprobs) if want_logprobs else None
                        pending += encoder.content(message.index, delta.text, lps)
                else:
                    finished = message.finished
                    usage.add(finished.usage)
                    reason = FINISH_REASONS.get(finished.reason, "stop")
                    pending += encoder.finish(message.index, reason)
                if pending:
                    await send({"type": "http.response.body", "body": pending, "more_body": True})
                    pending = b""
                message = await call.read()
        except grpc.aio.AioRpcError as error:
            api_error = from_grpc(error, self.rpc.request_id, req.model)
            self.status = api_error.status
            self.state.metrics.stream_errors.labels(self.entry.id, str(api_error.status)).inc()
            await send(
                {
                    "type": "http.response.body",
                    "body": pending + error_event(api_error) + DONE,
                    "more_body": False,
                }
            )
            return
        tail = encoder.usage(usage) + DONE if req.include_usage else DONE
        await send({"type": "http.response.body", "body": pending + tail, "more_body": False})

    def _record(self) -> None:
        metrics, model = self.state.metrics, self.entry.id
        elapsed = time.perf_counter() - self.started
        if self.first_token_at is not None:
            metrics.ttft.labels(model).observe(self.first_token_at - self.started)
        if self.status == 200:
            metrics.latency.labels(model, "true" if self.req.stream else "false").observe(elapsed)
            metrics.prompt_tokens.labels(model).inc(self.usage.prompt_tokens)
            metrics.completion_tokens.labels(model).inc(self.usage.completion_tokens)
        log.info(
            "chat %s key=%s user=%s model=%s status=%s prompt=%d completion=%d %.3fs",
            self.rpc.request_id,
            self.principal.name,
            self.req.user or "-",
            model,
            self.status or 499,
            self.usage.prompt_tokens,
            self.usage.completion_tokens,
            elapsed,
        )
