"""The Inference gRPC servicer: validates requests, runs them, and maps failures to status codes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator

import grpc

from inference.engines.base import EngineRequestError
from inference.errors import RequestError, invalid
from inference.generation import stream_generation
from inference.multiplex import MultiplexSession
from inference.pacing import DEFAULT_FLUSH_INTERVAL_S, DEFAULT_MESSAGES_PER_SECOND, stream_interval
from inference.prepare import build_plan, prompt_token_ids, resolve_model
from inference.registry import ModelRegistry, ServedModel
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


class InferenceServicer(pb_grpc.InferenceServicer):
    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_concurrent_requests: int = 1024,
        max_messages_per_second: float = DEFAULT_MESSAGES_PER_SECOND,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    ) -> None:
        self._registry = registry
        self._max_concurrent = max_concurrent_requests
        self._messages_per_second = max_messages_per_second
        self._flush_interval_s = flush_interval_s
        self._running: set[str] = set()  # request ids
        self._draining = False
        self._sessions: set[MultiplexSession] = set()  # open GenerateMany calls

    def _pace(self) -> float:
        return stream_interval(len(self._running), self._messages_per_second)

    @property
    def running_requests(self) -> int:
        return len(self._running)

    def drain(self) -> None:
        """Refuse new generations with UNAVAILABLE from now on; running ones go on.

        The gRPC server refuses new calls once it stops, but a GenerateMany stream opened
        before would still take new generations: this makes its client retry them elsewhere,
        and ends each stream once nothing runs on it, so that stopping waits only for the
        running requests, not for the whole grace period.
        """
        self._draining = True
        for session in self._sessions:
            session.drain()

    # Streams with context.write rather than yield, so it returns None.
    async def Generate(  # type: ignore[override]
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> None:
        try:
            # context.write (not yield) so that a cancelled RPC raises here, inside `aclosing`,
            # and the engine drops the request at once instead of when the generator is GC'd.
            async with contextlib.aclosing(self._generate(request)) as responses:
                async for response in responses:
                    await context.write(response)
        except RequestError as error:
            await _abort(context, error)

    async def GenerateMany(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[pb.GenerateManyRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        session = MultiplexSession(self._generate, context.write, self._flush_interval_s)
        if self._draining:
            session.drain()
        self._sessions.add(session)
        try:
            await session.run(request_iterator)
        finally:
            self._sessions.discard(session)

    async def _generate(
        self, request: pb.GenerateRequest
    ) -> AsyncGenerator[pb.GenerateResponse, None]:
        """One request's messages, for Generate and GenerateMany alike.

        Every way it can fail is a RequestError with the status the caller gets.
        """
        if self._draining:
            raise RequestError(
                grpc.StatusCode.UNAVAILABLE,
                "The server is shutting down; retry on another replica.",
            )
        plan = build_plan(self._registry, request, self._pace)
        if len(self._running) >= self._max_concurrent:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"The server is at capacity ({self._max_concurrent} concurrent requests); "
                "retry after a short backoff.",
                code="server_overloaded",
            )
        request_id = plan.engine_request.request_id
        if request_id in self._running:
            # Checked here, not left to the engines (some refuse a duplicate, some do not):
            # the ids of all calls and GenerateMany streams share one namespace.
            raise invalid(
                "request_id",
                f"{request_id!r} names a request that is still running; "
                "running requests need distinct ids",
            )
        self._running.add(request_id)
        try:
            async with contextlib.aclosing(stream_generation(plan)) as responses:
                async for response in responses:
                    yield response
        except EngineRequestError as error:
            raise invalid("messages", str(error)) from None
        except RequestError:
            raise
        except Exception:
            log.exception("request %s failed", request_id)
            raise RequestError(
                grpc.StatusCode.INTERNAL,
                f"internal error while generating (request id {request_id})",
            ) from None
        finally:
            self._running.discard(request_id)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[_model_info(model) for model in self._registry])

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        try:
            return _model_info(resolve_model(self._registry, request.model))
        except RequestError as error:
            await _abort(context, error)
            raise  # unreachable: abort raises

    async def Tokenize(
        self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.TokenizeResponse:
        try:
            model = resolve_model(self._registry, request.model)
            ids = prompt_token_ids(model, request)
        except RequestError as error:
            await _abort(context, error)
            raise
        return pb.TokenizeResponse(
            token_ids=ids, count=len(ids), context_length=model.context_length
        )

    async def CountTokens(
        self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountTokensResponse:
        response = await self.Tokenize(request, context)
        return pb.CountTokensResponse(count=response.count, context_length=response.context_length)

    async def GetStats(
        self, request: pb.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatsResponse:
        stats = []
        for model in self._registry:
            engine_stats = model.engine.stats()
            stats.append(
                pb.ModelStats(
                    model=model.id,
                    active_requests=engine_stats.active_requests,
                    queued_requests=engine_stats.queued_requests,
                    kv_cache_usage=engine_stats.kv_cache_usage,
                    kv_cache_hit_rate=engine_stats.kv_cache_hit_rate,
                    generated_tokens=engine_stats.generated_tokens,
                )
            )
        return pb.GetStatsResponse(models=stats)


def _model_info(model: ServedModel) -> pb.ModelInfo:
    return pb.ModelInfo(
        id=model.id,
        aliases=model.config.aliases,
        engine=model.config.engine,
        context_length=model.context_length,
        max_output_tokens=model.max_output_tokens,
        created=model.created,
    )


async def _abort(context: grpc.aio.ServicerContext, error: RequestError) -> None:
    context.set_trailing_metadata(error.trailing_metadata())
    await context.abort(error.status, error.message)
