"""The ASGI response that runs one admitted request (facade/admission.py) on a backend.

It owns the request's generations (`facade.backend_streams.Generation`s, read like Generate
calls; one per prompt, chat has one): it starts them side by side and waits for the first
message of each before sending a status (so an error the inference service finds, such as a
context overflow, still gets its own status), streams or collects the rest, cancels the
generations the moment the client disconnects, and at its end gives back the slot and lease.
The reply's shape (chat or text completion, or a Responses API response) is the admitted
request's (facade/shapes.py).

Several prompts' generations are read one after the other, their choices renumbered
`prompt_index * n + i` as OpenAI numbers them; they run side by side on the backend all along,
so reading in turn only orders the chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from facade.admission import Admitted
from facade.backend_streams import EOF, Generation
from facade.backends import Backend, no_backend
from facade.deps import FacadeState
from facade.errors import APIError, from_request_error
from facade.shapes import StreamEncoder
from facade.sse import SSE_HEADERS, DisconnectWatcher
from facade.translate import UsageCounter
from tensorchat.request_error import RequestError
from tensorchat.v1 import inference_pb2 as pb

log = logging.getLogger(__name__)

# Past the generation time limit, give the service this long to report the finish itself.
_DEADLINE_SLACK_S = 30.0


class GenerationRun(Response):
    """The ASGI response that runs one admitted request on a backend."""

    def __init__(self, state: FacadeState, chat: Admitted) -> None:
        super().__init__(status_code=200)
        self.state = state
        self.chat = chat
        self.usage = UsageCounter()
        self.status = 0
        self.first_token_at: float | None = None
        self._calls: list[Generation] = []
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
            # A cancelled read means our own cancel after a disconnect; anything else
            # (server shutdown) propagates.
            if not watcher.disconnected:
                raise
        finally:
            self._done = True
            watcher.stop()
            self._cancel_calls()
            if watcher.disconnected and not finished:
                self.status = 499
            self.state.gate.exit()
            self.state.metrics.in_flight.dec()
            await self.chat.lease.release(self._tokens_used())
            self._record()

    def _tokens_used(self) -> int | None:
        """What the key is charged: real usage, nothing for a refusal, else the estimate."""
        if self.usage.prompt_tokens:
            return self.usage.total_tokens
        if self.status >= 400 and self.status != 499 and not self._began:
            return 0  # refused before any generation (context overflow, overload, ...)
        return None  # cut short without a usage report: keep the admission estimate

    def _cancel_rpc(self) -> None:
        if not self._done:
            self._cancel_calls()

    def _cancel_calls(self) -> None:
        for call in self._calls:
            if not call.done():
                call.cancel()

    async def _run(self, send: Send, watcher: DisconnectWatcher) -> None:
        candidates = self.state.pool.candidates(self.chat.entry.id)
        if not candidates:
            await self._send_error(send, no_backend(self.chat.req.model))
            return
        with contextlib.ExitStack() as held:  # each generation's backend, until the end
            started = await asyncio.gather(
                *(self._start(rpc, candidates, watcher, held) for rpc in self.chat.rpcs),
                return_exceptions=True,
            )
            for outcome in started:
                if isinstance(outcome, BaseException):
                    self._cancel_calls()
                    if not isinstance(outcome, RequestError):
                        raise outcome
                    await self._send_error(send, self._api_error(outcome))
                    return
            messages = self._messages(started)  # type: ignore[arg-type]  # no exception left
            if self.chat.req.stream:
                await self._stream(send, messages)
            else:
                await self._complete(send, messages)

    async def _start(
        self,
        rpc: pb.GenerateRequest,
        candidates: list[Backend],
        watcher: DisconnectWatcher,
        held: contextlib.ExitStack,
    ) -> tuple[Generation, Any]:
        """One generation and its first message, on the first backend that takes it; raises
        the RequestError that refused it."""
        limit = self.state.settings.request_time_limit_s
        timeout = limit + _DEADLINE_SLACK_S if limit else None
        for attempt, backend in enumerate(candidates):
            with contextlib.ExitStack() as using:
                using.enter_context(self.state.pool.use(backend))
                call = await backend.generations.start(rpc, timeout)
                self._calls.append(call)
                if watcher.disconnected:
                    call.cancel()
                try:
                    first = await call.read()
                except RequestError as error:
                    if self._retryable(error, backend) and attempt + 1 < len(candidates):
                        continue
                    raise
                held.enter_context(using.pop_all())
                return call, first
        raise AssertionError("unreachable: the last candidate's error is raised")

    async def _messages(
        self, started: list[tuple[Generation, Any]]
    ) -> AsyncIterator[pb.GenerateResponse]:
        """Every generation's messages in turn (from its first), choices numbered across
        prompts."""
        n = self.chat.req.n
        for prompt, (call, message) in enumerate(started):
            while message is not EOF:
                if prompt:
                    message.index += prompt * n
                yield message
                message = await call.read()

    def _retryable(self, error: RequestError, backend: Backend) -> bool:
        # UNAVAILABLE before any message: the request never reached a model, so another
        # replica can take it; the failed one leaves routing until it answers a probe.
        if error.status != grpc.StatusCode.UNAVAILABLE:
            return False
        self.state.pool.mark_down(backend, error.message or "UNAVAILABLE")
        return True

    def _with_request_id(
        self, content_type: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        return [*content_type, (b"x-request-id", self.chat.completion_id.encode())]

    def _api_error(self, error: RequestError) -> APIError:
        return from_request_error(error, self.chat.completion_id, self.chat.req.model)

    async def _reply(self, send: Send, status: int, body: bytes, extra: dict[str, str]) -> None:
        """One whole JSON response: a completion or an error."""
        self.status = status
        headers = self._with_request_id([(b"content-type", b"application/json")])
        headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _send_error(self, send: Send, error: APIError) -> None:
        await self._reply(send, error.status, error.body(), error.headers)

    async def _complete(self, send: Send, messages: AsyncIterator[pb.GenerateResponse]) -> None:
        chat = self.chat
        builder = chat.shape.builder()
        try:
            async for message in messages:
                if self.first_token_at is None and message.HasField("delta"):
                    self.first_token_at = time.perf_counter()
                builder.add(message)
        except RequestError as error:
            await self._send_error(send, self._api_error(error))
            return
        self.usage = builder.usage
        reply = builder.to_json(
            chat.completion_id, chat.created, chat.req.model, chat.entry.fingerprint
        )
        self._began = True
        try:
            await chat.shape.keep()
        except APIError as error:
            await self._send_error(send, error)
            return
        # Validated against the documented shape; exclude_unset keeps what to_json left out
        # (tool_calls when no call was made) out of the reply.
        body = chat.shape.reply_model.model_validate(reply).model_dump_json(exclude_unset=True)
        await self._reply(send, 200, body.encode(), {})

    async def _stream(self, send: Send, messages: AsyncIterator[pb.GenerateResponse]) -> None:
        chat, req = self.chat, self.chat.req
        encoder = chat.shape.encoder(
            chat.completion_id, chat.created, req.model, chat.entry.fingerprint
        )
        self.status = 200
        self._began = True
        headers = self._with_request_id(SSE_HEADERS)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        opening = encoder.start()
        if opening:
            await send({"type": "http.response.body", "body": opening, "more_body": True})
        usage = self.usage
        try:
            async for message in messages:
                if message.HasField("finished"):
                    usage.add(message.finished.usage, message.index // req.n)
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
            await chat.shape.keep()
        except APIError as api_error:
            await self._end_stream_with(send, encoder, api_error)
            return
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _end_stream_with(self, send: Send, encoder: StreamEncoder, error: APIError) -> None:
        """An error after the 200 went out: the stream's error events end it."""
        self.status = error.status
        self.state.metrics.stream_errors.labels(self.chat.entry.id, str(error.status)).inc()
        body = encoder.error(error)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _record(self) -> None:
        chat, metrics, model = self.chat, self.state.metrics, self.chat.entry.id
        elapsed = time.perf_counter() - chat.started
        if self.first_token_at is not None:
            metrics.ttft.labels(model).observe(self.first_token_at - chat.started)
        if self.status == 200:
            metrics.latency.labels(model, "true" if chat.req.stream else "false").observe(elapsed)
            metrics.prompt_tokens.labels(model).inc(self.usage.prompt_tokens)
            metrics.completion_tokens.labels(model).inc(self.usage.completion_tokens)
        log.info(
            "%s %s key=%s user=%s model=%s status=%s prompt=%d completion=%d %.3fs",
            chat.shape.kind,
            chat.completion_id,
            chat.principal.name,
            chat.req.user or "-",
            model,
            self.status or 499,
            self.usage.prompt_tokens,
            self.usage.completion_tokens,
            elapsed,
        )
