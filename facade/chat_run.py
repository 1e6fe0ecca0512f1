"""The ASGI response that runs one admitted chat request (facade/admission.py) on a backend.

It owns the generation (a `facade.backend_streams.Generation`, read like a Generate call): it waits
for the first message before sending a status (so an error the inference service finds, such
as a context overflow, still gets its own status), streams or collects the rest, cancels the
generation the moment the client disconnects, and at its end gives back the slot and lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from facade.admission import AdmittedChat
from facade.backend_streams import EOF, Generation
from facade.backends import Backend, no_backend
from facade.deps import FacadeState
from facade.errors import APIError, from_request_error
from facade.metrics import record_final_status
from facade.ratelimit_headers import rate_limit_headers
from facade.request_context import reason_name
from facade.schemas import ChatCompletion
from facade.sse import DONE, SSE_HEADERS, DisconnectWatcher, error_event
from facade.translate import ChunkEncoder, CompletionBuilder, UsageCounter, openai_param
from tensorchat.request_error import RequestError

log = logging.getLogger(__name__)

# Past the request's time limit, give the service this long to report the finish itself.
_DEADLINE_SLACK_S = 30.0
# A request that failed before anything reached its client runs once more, on another replica.
_MAX_ATTEMPTS = 2


class ChatRun(Response):
    """The ASGI response that runs one admitted chat request on a backend."""

    def __init__(self, state: FacadeState, chat: AdmittedChat) -> None:
        super().__init__(status_code=200)
        self.state = state
        self.chat = chat
        self.usage = UsageCounter()
        self.status = 0
        self.first_token_at: float | None = None
        self._call: Generation | None = None
        self._done = False
        self._began = False  # a 200 went out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = DisconnectWatcher(receive, self._cancel_rpc)
        watcher.start()
        self.state.metrics.in_flight.inc()
        finished = False
        try:
            await self._run(send, watcher)
            finished = True
        except asyncio.CancelledError:
            # A cancelled read means our own cancel after a disconnect; anything else is the
            # server cutting the request at the end of its shutdown grace: say so, then stop.
            if not watcher.disconnected:
                await self._cut_short(send)
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
            await self.chat.lease.release(self._tokens_used())
            record_final_status(scope, self.status or 499)
            self._record()

    def _tokens_used(self) -> int | None:
        """What the key is charged: real usage, nothing for a refusal, else the estimate."""
        if self.usage.prompt_tokens:
            return self.usage.total_tokens
        if self.status >= 400 and self.status != 499 and not self._began:
            return 0  # refused before it ran (context overflow, overload, ...)
        return None  # cut short without a usage report: keep the admission estimate

    def _cancel_rpc(self) -> None:
        if not self._done and self._call is not None:
            self._call.cancel()

    async def _run(self, send: Send, watcher: DisconnectWatcher) -> None:
        """Runs the request on a replica; once more on another if the first failed before
        anything reached the client (see `_retryable`)."""
        pool = self.state.pool
        limit = self.state.settings.request_time_limit_s
        timeout = limit + _DEADLINE_SLACK_S if limit else None
        tried: list[Backend] = []
        failure: RequestError | None = None
        while len(tried) < _MAX_ATTEMPTS:
            backend = next((b for b in pool.candidates(self.chat.entry.id) if b not in tried), None)
            if backend is None:
                break
            tried.append(backend)
            if len(tried) > 1:
                self.state.metrics.retries.labels(self.chat.entry.id).inc()
            with pool.use(backend):
                call = await backend.generations.start(self.chat.rpc, timeout)
                self._call = call
                if watcher.disconnected:
                    call.cancel()
                if self.chat.req.stream:
                    failure = await self._stream(send, call)
                else:
                    failure = await self._complete(send, call)
            if failure is None or not self._retryable(failure, backend):
                break
        if failure is not None:
            await self._send_error(send, self._api_error(failure))
        elif not tried:
            await self._send_error(send, no_backend(self.chat.req.model))

    def _retryable(self, error: RequestError, backend: Backend) -> bool:
        # UNAVAILABLE with nothing sent to the client: the request did not run to an end on
        # that replica (it died, froze, drains, or its stream broke), so another can take it;
        # the failed one leaves routing until it answers a probe.
        if error.status != grpc.StatusCode.UNAVAILABLE:
            return False
        self.state.pool.mark_down(backend, error.message or "UNAVAILABLE")
        return True

    async def _cut_short(self, send: Send) -> None:
        """The server stops before this request ended: a 503, or the stream's error event."""
        error = APIError(
            503, "The server is shutting down; please retry.", headers={"Retry-After": "1"}
        )
        with contextlib.suppress(Exception):  # the connection may be gone as well
            if not self._began:
                await self._send_error(send, error)
            elif self.chat.req.stream:
                self.status = 503
                body = error_event(error) + DONE
                await send({"type": "http.response.body", "body": body, "more_body": False})

    def _response_headers(
        self, content_type: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """The headers of every response after admission: the key's rate-limit levels (the
        request id comes from facade/request_context.py, on every response)."""
        limits = rate_limit_headers(self.chat.lease.levels)
        return [*content_type, *((name.encode(), value.encode()) for name, value in limits.items())]

    def _api_error(self, error: RequestError) -> APIError:
        req = self.chat.req
        return from_request_error(
            error, self.chat.rpc.request_id, req.model, lambda param: openai_param(param, req)
        )

    async def _reply(self, send: Send, status: int, body: bytes, extra: dict[str, str]) -> None:
        """One whole JSON response: a completion or an error."""
        self.status = status
        headers = self._response_headers([(b"content-type", b"application/json")])
        headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _send_error(self, send: Send, error: APIError) -> None:
        await self._reply(send, error.status, error.body(), error.headers)

    async def _complete(self, send: Send, call: Generation) -> RequestError | None:
        """Collects the whole completion and replies; a failure is returned unsent (nothing
        reached the client, so the caller may run the request elsewhere)."""
        chat = self.chat
        builder = CompletionBuilder(chat.req.n, bool(chat.req.logprobs), chat.req.legacy_functions)
        try:
            while (message := await call.read()) is not EOF:
                if self.first_token_at is None and message.HasField("delta"):
                    self.first_token_at = time.perf_counter()
                builder.add(message)
                if message.HasField("finished"):
                    self.chat.record.finish_reasons.append(reason_name(message.finished.reason))
        except RequestError as error:
            return error
        self.usage = builder.usage
        reply = builder.to_json(
            chat.completion_id, chat.created, chat.req.model, chat.entry.fingerprint
        )
        self._began = True
        # Validated against the documented shape; exclude_unset keeps what to_json left out
        # (tool_calls when no call was made) out of the reply.
        body = ChatCompletion.model_validate(reply).model_dump_json(exclude_unset=True)
        await self._reply(send, 200, body.encode(), {})
        return None

    async def _stream(self, send: Send, call: Generation) -> RequestError | None:
        """Streams the request; a failure before its first message is returned unsent (the
        caller may run it elsewhere), a later one ends the stream with an error event."""
        try:
            first = await call.read()
        except RequestError as error:
            return error
        chat, req = self.chat, self.chat.req
        encoder = ChunkEncoder(
            chat.completion_id,
            chat.created,
            req.model,
            chat.entry.fingerprint,
            req.include_usage,
            n=req.n,
            want_logprobs=bool(req.logprobs),
            legacy_functions=req.legacy_functions,
        )
        self.status = 200
        self._began = True
        headers = self._response_headers(SSE_HEADERS)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        usage = self.usage
        message = first
        try:
            while message is not EOF:
                if message.HasField("finished"):
                    usage.add(message.finished.usage)
                    chat.record.finish_reasons.append(reason_name(message.finished.reason))
                elif self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                body = encoder.response(message)
                if body:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                message = await call.read()
        except RequestError as error:
            api_error = self._api_error(error)
            self.status = api_error.status
            self.state.metrics.stream_errors.labels(chat.entry.id, str(api_error.status)).inc()
            body = error_event(api_error) + DONE
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return None
        tail = encoder.usage(usage) + DONE if req.include_usage else DONE
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        return None

    def _record(self) -> None:
        chat, metrics, model = self.chat, self.state.metrics, self.chat.entry.id
        elapsed = time.perf_counter() - chat.started
        if self.first_token_at is not None:
            metrics.ttft.labels(model).observe(self.first_token_at - chat.started)
        if self.status == 200:
            metrics.latency.labels(model, "true" if chat.req.stream else "false").observe(elapsed)
            metrics.prompt_tokens.labels(model).inc(self.usage.prompt_tokens)
            metrics.completion_tokens.labels(model).inc(self.usage.completion_tokens)
        # The access log line is written after the last byte (facade/request_context.py).
        record = chat.record
        record.prompt_tokens = self.usage.prompt_tokens
        record.completion_tokens = self.usage.completion_tokens
        record.user = chat.req.user
        if self.first_token_at is not None:
            record.ttft_s = self.first_token_at - chat.started
