"""The Inference gRPC servicer: each RPC handed to what serves it, failures as status codes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from inference.errors import RequestError
from inference.generate_many import GenerateManySession
from inference.metrics import InferenceMetrics
from inference.pacing import DEFAULT_FLUSH_INTERVAL_S, DEFAULT_MESSAGES_PER_SECOND
from inference.prepare import prompt_token_ids, resolve_model
from inference.registry import ModelRegistry, ServedModel
from inference.runner import RequestRunner
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc

# The W3C trace context headers (tensorchat/tracing.py).
TRACE_METADATA_KEYS = frozenset({"traceparent", "tracestate"})


class InferenceServicer(pb_grpc.InferenceServicer):
    """The gRPC adapter: Generate and GenerateMany both run requests through one runner."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_concurrent_requests: int = 1024,
        max_messages_per_second: float = DEFAULT_MESSAGES_PER_SECOND,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        metrics: InferenceMetrics | None = None,
    ) -> None:
        self._registry = registry
        self._runner = RequestRunner(
            registry,
            max_concurrent_requests=max_concurrent_requests,
            max_messages_per_second=max_messages_per_second,
            metrics=metrics,
        )
        self._flush_interval_s = flush_interval_s
        self._sessions: set[GenerateManySession] = set()  # open GenerateMany calls

    @property
    def running_requests(self) -> int:
        return self._runner.running_requests

    def drain(self) -> None:
        """Refuse new requests with UNAVAILABLE from now on; running ones go on.

        The gRPC server refuses new calls once it stops, but a GenerateMany stream opened
        before would still take new requests: this makes its client retry them elsewhere,
        and ends each stream once nothing runs on it, so that stopping waits only for the
        running requests, not for the whole grace period.
        """
        self._runner.draining = True
        for session in self._sessions:
            session.drain()

    # Streams with context.write rather than yield, so it returns None.
    async def Generate(  # type: ignore[override]
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> None:
        if not request.trace_context:
            # A Generate caller carries its trace context as gRPC metadata (W3C keys).
            for key, value in context.invocation_metadata() or ():
                if key in TRACE_METADATA_KEYS and isinstance(value, str):
                    request.trace_context[key] = value
        try:
            # context.write (not yield) so that a cancelled RPC raises here, inside `aclosing`,
            # and the engine drops the request at once instead of when the generator is GC'd.
            async with contextlib.aclosing(self._runner.run(request)) as responses:
                async for response in responses:
                    await context.write(response)
        except RequestError as error:
            await _abort(context, error)

    async def GenerateMany(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[pb.GenerateManyRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        session = GenerateManySession(self._runner.run, context.write, self._flush_interval_s)
        if self._runner.draining:
            session.drain()
        self._sessions.add(session)
        try:
            await session.run(request_iterator)
        finally:
            self._sessions.discard(session)

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
