"""The Inference gRPC servicer: each RPC handed to what serves it, failures as status codes."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator

import grpc

from inference.defaults import MAX_CONCURRENT_REQUESTS, WAITING_INTERVAL_S
from inference.errors import RequestError
from inference.generate_many import GenerateManySession
from inference.metrics import InferenceMetrics
from inference.pacing import (
    DEFAULT_FLUSH_INTERVAL_S,
    DEFAULT_MESSAGES_PER_SECOND,
    DEFAULT_MIN_STREAM_INTERVAL_S,
)
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
        max_concurrent_requests: int = MAX_CONCURRENT_REQUESTS,
        max_messages_per_second: float = DEFAULT_MESSAGES_PER_SECOND,
        min_stream_interval_s: float = DEFAULT_MIN_STREAM_INTERVAL_S,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        waiting_interval_s: float = WAITING_INTERVAL_S,
        metrics: InferenceMetrics | None = None,
    ) -> None:
        self._registry = registry
        self._runner = RequestRunner(
            registry,
            max_concurrent_requests=max_concurrent_requests,
            max_messages_per_second=max_messages_per_second,
            min_stream_interval_s=min_stream_interval_s,
            metrics=metrics,
        )
        self._flush_interval_s = flush_interval_s
        self._waiting_interval_s = waiting_interval_s
        self._sessions: set[GenerateManySession] = set()  # open GenerateMany calls

    @property
    def running_requests(self) -> int:
        return self._runner.running_requests

    async def probe_engine(self, model_id: str) -> None:
        """Runs a one-token request on `model_id`'s engine, as any request runs, to see whether
        it generates (inference.engine_watch): only the engine's counter tells, so how the
        request ends is not looked at. `ignore_eos` makes its one token a counted one on every
        engine (an eos is never output; TensorRT-LLM: end_id -1, trtllm/requests.py). It shows
        in the request metrics and logs like any other request, with an `engine-watch-` id."""
        request = pb.GenerateRequest(
            request_id=f"engine-watch-{uuid.uuid4().hex}",
            model=model_id,
            prompt="ping",
            stopping=pb.StoppingCriteria(max_tokens=1, ignore_eos=True),
        )
        # Whatever it ends with (a refusal, an engine fault the runner has logged) is the
        # watch's to judge by the counter; nothing escapes the probe's task.
        with contextlib.suppress(Exception):
            async with contextlib.aclosing(self._runner.run(request)) as responses:
                async for _ in responses:
                    pass

    def drain(self) -> None:
        """Refuse new requests with UNAVAILABLE (open GenerateMany streams would still take
        them after the server stops); running ones go on, and each stream ends once idle."""
        self._runner.draining = True
        for session in self._sessions:
            session.close()

    async def Generate(  # type: ignore[override]
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> None:
        if not request.trace_context:
            # A Generate caller carries its trace context as gRPC metadata (W3C keys).
            for key, value in context.invocation_metadata() or ():
                if key in TRACE_METADATA_KEYS and isinstance(value, str):
                    request.trace_context[key] = value
        try:
            # context.write, not yield: a cancelled RPC raises here, inside `aclosing`, and the
            # engine drops the request at once instead of when the generator is collected.
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
        session = GenerateManySession(
            self._runner.run,
            context.write,
            self._flush_interval_s,
            engine_progress=self._generated_tokens,
            waiting_interval_s=self._waiting_interval_s,
        )
        if self._runner.draining:
            session.close()
        self._sessions.add(session)
        try:
            await session.run(request_iterator)
        finally:
            self._sessions.discard(session)

    def _generated_tokens(self, model_name: str) -> int | None:
        """How far the engine serving `model_name` has got (GenerateManySession's `waiting`)."""
        try:
            model = resolve_model(self._registry, model_name)
        except RequestError:
            return None
        return model.engine.generated_tokens

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
            ids = await self._runner.off_loop(prompt_token_ids, model, request)
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
        # EngineStats' fields are ModelStats' (but the model), by name.
        stats = [
            pb.ModelStats(model=model.id, **dataclasses.asdict(model.engine.stats()))
            for model in self._registry
        ]
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
