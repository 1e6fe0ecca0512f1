"""The ASGI response that runs one admitted request (facade/admission.py) on a backend: a chat
completion, or a text completion of one or more prompts.

It owns the request's generations (`facade.backend_streams.Generation`s, read like Generate
calls; one per prompt, chat has one): it starts them side by side on one replica and waits for
the first message of each before sending a status (so an error the inference service finds,
such as a context overflow, still gets its own status), streams or collects the rest, cancels
the generations the moment the client disconnects, and at its end gives back the slot and
lease. A request that failed before anything reached its client runs once more, on another
replica (`_retryable`). The reply's shape (chat or text completion, or a Responses API
response) is the admitted request's (facade/shapes.py).

Several prompts' generations are read one after the other, their choices renumbered
`prompt_index * n + i` as OpenAI numbers them; they run side by side on the backend all along,
so reading in turn only orders the chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from facade.admission import Admitted
from facade.backend_streams import EOF, Generation, Stalled
from facade.backends import Backend, no_backend
from facade.deps import FacadeState
from facade.errors import APIError, from_request_error
from facade.ratelimit_headers import rate_limit_headers
from facade.request_context import reason_name
from facade.shapes import StreamEncoder
from facade.sse import SSE_HEADERS, DisconnectWatcher
from facade.translate import UsageCounter, openai_param
from tensorchat.request_error import RequestError
from tensorchat.v1 import inference_pb2 as pb

log = logging.getLogger(__name__)

# Past the request's time limit, give the service this long to report the finish itself.
_DEADLINE_SLACK_S = 30.0
# A request that failed before anything reached its client runs once more, on another replica.
_MAX_ATTEMPTS = 2


class GenerationRun(Response):
    """The ASGI response that runs one admitted request on a backend."""

    def __init__(self, state: FacadeState, run: Admitted) -> None:
        super().__init__(status_code=200)
        self.state = state
        self.run = run
        self.usage = UsageCounter()
        self.status = 0
        self.first_token_at: float | None = None
        self._calls: list[Generation] = []  # the current attempt's
        self._done = False
        self._began = False  # a 200 went out
        self._ended = False  # a stream's last body message went out
        self._encoder: StreamEncoder | None = None  # once a stream's 200 went out

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
            self._cancel_calls()
            if watcher.disconnected and not finished:
                self.status = 499
            self.state.gate.exit()
            self.state.metrics.in_flight.dec()
            await self.run.lease.release(self._tokens_used())
            self.run.record.final_status = self.status or 499
            self._record()

    def _tokens_used(self) -> int | None:
        """What the key is charged: real usage, nothing for a refusal, else the estimate."""
        if self.usage.prompt_tokens:
            return self.usage.total_tokens
        if self.status >= 400 and self.status != 499 and not self._began:
            return 0  # refused before it ran (context overflow, overload, ...)
        return None  # cut short without a usage report: keep the admission estimate

    def _cancel_rpc(self) -> None:
        if not self._done:
            self._cancel_calls()

    def _cancel_calls(self) -> None:
        for call in self._calls:
            if not call.done():
                call.cancel()

    async def _run(self, send: Send, watcher: DisconnectWatcher) -> None:
        """Runs the request on a replica; once more on another if the first failed before
        anything reached the client (see `_retryable`)."""
        pool = self.state.pool
        tried: list[Backend] = []
        failure: RequestError | None = None
        while len(tried) < _MAX_ATTEMPTS:
            backend = next((b for b in pool.candidates(self.run.entry.id) if b not in tried), None)
            if backend is None:
                break
            tried.append(backend)
            if len(tried) > 1:
                self.state.metrics.retries.labels(self.run.entry.id).inc()
            self._calls = []
            with contextlib.ExitStack() as using:
                calls = [await self._start(rpc, backend, using) for rpc in self.run.rpcs]
                if watcher.disconnected:
                    self._cancel_calls()
                if self.run.req.stream:
                    failure = await self._stream(send, calls)
                else:
                    failure = await self._complete(send, calls)
                # A failed attempt's other generations stop before another replica runs them.
                self._cancel_calls()
            if failure is None or not self._retryable(failure, backend):
                break
        if failure is not None:
            await self._send_error(send, self._api_error(failure))
        elif not tried:
            await self._send_error(send, no_backend(self.run.req.model))

    async def _start(
        self, rpc: pb.GenerateRequest, backend: Backend, using: contextlib.ExitStack
    ) -> Generation:
        """Starts one generation on `backend`, counted against it while the attempt runs."""
        using.enter_context(self.state.pool.use(backend))
        limit = self.state.settings.request_time_limit_s
        call = await backend.generations.start(rpc, limit + _DEADLINE_SLACK_S if limit else None)
        self._calls.append(call)
        return call

    def _retryable(self, error: RequestError, backend: Backend) -> bool:
        # UNAVAILABLE with nothing sent to the client: the request did not run to an end on
        # that replica (it died, froze, drains, stalled, or its stream broke), so another can
        # take it; the failed one leaves routing until it answers a probe. A stall takes it
        # out only if it is hung, not busy (`BackendPool.stalled`).
        if error.status != grpc.StatusCode.UNAVAILABLE:
            return False
        if isinstance(error, Stalled):
            self.state.pool.stalled(backend, error.message)
        else:
            self.state.pool.mark_down(backend, error.message or "UNAVAILABLE")
        return True

    async def _cut_short(self, send: Send) -> None:
        """The server stops before this request ended: a 503, or the stream's error event."""
        if self._ended:
            return  # the cancel came after the stream's last byte: it ended as it was
        error = APIError(
            503, "The server is shutting down; please retry.", headers={"Retry-After": "1"}
        )
        with contextlib.suppress(Exception):  # the connection may be gone as well
            if not self._began:
                await self._send_error(send, error)
            elif self._encoder is not None:
                self.status = 503
                body = self._encoder.error(error)
                await send({"type": "http.response.body", "body": body, "more_body": False})

    def _response_headers(
        self, content_type: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """The headers of every response after admission: the key's rate-limit levels (the
        request id comes from facade/request_context.py, on every response)."""
        limits = rate_limit_headers(self.run.lease.levels)
        return [*content_type, *((name.encode(), value.encode()) for name, value in limits.items())]

    def _api_error(self, error: RequestError) -> APIError:
        req = self.run.req
        return from_request_error(
            error,
            self.run.record.generation_id,
            req.model,
            lambda param: openai_param(param, req),
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

    async def _complete(self, send: Send, calls: list[Generation]) -> RequestError | None:
        """Collects the whole completion and replies; a failure is returned unsent (nothing
        reached the client, so the caller may run the request elsewhere)."""
        run = self.run
        builder = run.shape.builder()
        try:
            async for message in self._messages(calls):
                if self.first_token_at is None and message.HasField("delta"):
                    self.first_token_at = time.perf_counter()
                builder.add(message)
                if message.HasField("finished"):
                    run.record.finish_reasons.append(reason_name(message.finished.reason))
        except RequestError as error:
            return error
        self.usage = builder.usage
        reply = builder.to_json(
            run.completion_id, run.created, run.req.model, run.entry.fingerprint
        )
        self._began = True
        try:
            await run.shape.keep()
        except APIError as error:
            await self._send_error(send, error)
            return None
        # Validated against the documented shape; exclude_unset keeps what to_json left out
        # (tool_calls when no call was made) out of the reply.
        body = run.shape.reply_model.model_validate(reply).model_dump_json(exclude_unset=True)
        await self._reply(send, 200, body.encode(), {})
        return None

    async def _stream(self, send: Send, calls: list[Generation]) -> RequestError | None:
        """Streams the request; a failure before every generation's first message is returned
        unsent (the caller may run it elsewhere), a later one ends the stream with an error
        event."""
        try:
            firsts = await _first_messages(calls)
        except RequestError as error:
            return error
        run, req = self.run, self.run.req
        encoder = self._encoder = run.shape.encoder(
            run.completion_id, run.created, req.model, run.entry.fingerprint
        )
        self.status = 200
        self._began = True
        headers = self._response_headers(SSE_HEADERS)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        opening = encoder.start()
        if opening:
            await send({"type": "http.response.body", "body": opening, "more_body": True})
        # The events go out from a task of their own. This task sits under some twenty ASGI
        # frames (uvicorn, the middlewares, the router), and every wake-up resumes them all,
        # once per event; a task of its own resumes four. Awaited here, so a cancel of this
        # one reaches it and its outcome is this one's. Measured: 0.86 of the facade's CPU
        # per stream (benchmarks/README.md, "Issue 20, fourth session").
        events = asyncio.get_running_loop().create_task(
            self._send_events(send, encoder, calls, firsts)
        )
        try:
            await events
        except asyncio.CancelledError:
            # Cancelled in the turn between the events' task's end and this one's wake-up,
            # the cancel stopped nothing: what that task raised is still this request's.
            if events.done() and not events.cancelled() and (failure := events.exception()):
                raise failure from None
            raise
        return None

    async def _send_events(
        self, send: Send, encoder: StreamEncoder, calls: list[Generation], firsts: list[Any]
    ) -> None:
        """A stream's events after its head, and its end: the last chunk or an error event."""
        run, req = self.run, self.run.req
        usage = self.usage
        try:
            async for message in self._messages(calls, firsts):
                if message.HasField("finished"):
                    usage.add(message.finished.usage, message.index // req.n)
                    run.record.finish_reasons.append(reason_name(message.finished.reason))
                elif self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                body = encoder.response(message)
                if body:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
        except RequestError as error:
            await self._end_stream_with(send, encoder, self._api_error(error))
            return
        tail = encoder.end(usage)
        try:
            await run.shape.keep()
        except APIError as api_error:
            await self._end_stream_with(send, encoder, api_error)
            return
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        self._ended = True

    async def _end_stream_with(self, send: Send, encoder: StreamEncoder, error: APIError) -> None:
        """An error after the 200 went out: the stream's error events end it."""
        self.status = error.status
        self.state.metrics.stream_errors.labels(self.run.entry.id, str(error.status)).inc()
        body = encoder.error(error)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        self._ended = True

    async def _messages(
        self, calls: list[Generation], firsts: Sequence[Any] = ()
    ) -> AsyncIterator[pb.GenerateResponse]:
        """Every generation's messages in turn (from its first, when already read), choices
        numbered across prompts."""
        n = self.run.req.n
        for prompt, call in enumerate(calls):
            message = firsts[prompt] if firsts else await call.read()
            while message is not EOF:
                if prompt:
                    message.index += prompt * n
                yield message
                message = await call.read()

    def _record(self) -> None:
        run, metrics, model = self.run, self.state.metrics, self.run.entry.id
        elapsed = time.perf_counter() - run.started
        if self.first_token_at is not None:
            metrics.ttft.labels(model).observe(self.first_token_at - run.started)
        if self.status == 200:
            metrics.latency.labels(model, "true" if run.req.stream else "false").observe(elapsed)
            metrics.prompt_tokens.labels(model).inc(self.usage.prompt_tokens)
            metrics.completion_tokens.labels(model).inc(self.usage.completion_tokens)
        # The access log line is written after the last byte (facade/request_context.py).
        record = run.record
        record.prompt_tokens = self.usage.prompt_tokens
        record.completion_tokens = self.usage.completion_tokens
        record.user = run.req.user
        if self.first_token_at is not None:
            record.ttft_s = self.first_token_at - run.started


async def _first_messages(calls: list[Generation]) -> list[Any]:
    """Each generation's first message, read side by side; raises the first prompt's
    RequestError should any fail."""
    outcomes = await asyncio.gather(*(call.read() for call in calls), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes
