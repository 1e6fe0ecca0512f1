"""Admits requests and runs each on its engine: the one path Generate and GenerateMany share.

Every way a request can fail comes out as the RequestError whose status its caller gets.
Each hand-over of the engine (one output per choice) becomes at most one Delta per choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar, cast

import grpc

from inference.choices import ChoiceAssembler
from inference.defaults import MAX_CONCURRENT_REQUESTS
from inference.engines.base import EngineRequestError, SequenceOutput
from inference.errors import RequestError, invalid
from inference.metrics import InferenceMetrics
from inference.observation import RequestObservation
from inference.pacing import (
    DEFAULT_MESSAGES_PER_SECOND,
    DEFAULT_MIN_STREAM_INTERVAL_S,
    stream_interval,
)
from inference.prepare import RequestPlan, build_plan
from inference.prepare_threads import PrepareThreads
from inference.registry import ModelRegistry
from inference.tool_call_parser import ToolCallParser
from tensorchat.v1 import inference_pb2 as pb

log = logging.getLogger(__name__)

PREPARE_THREADS = 4
T = TypeVar("T")


class RequestRunner:
    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_concurrent_requests: int = MAX_CONCURRENT_REQUESTS,
        max_messages_per_second: float = DEFAULT_MESSAGES_PER_SECOND,
        min_stream_interval_s: float = DEFAULT_MIN_STREAM_INTERVAL_S,
        metrics: InferenceMetrics | None = None,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._max_concurrent = max_concurrent_requests
        self._messages_per_second = max_messages_per_second
        self._min_stream_interval_s = min_stream_interval_s
        self._running: set[str] = set()  # request ids
        self.draining = False  # new requests are refused with UNAVAILABLE
        # Few threads: enough that one long prompt does not queue the short ones behind it,
        # few enough that a burst of long prompts leaves cores to the engine and the loop.
        self._prepare_threads = PrepareThreads(PREPARE_THREADS)

    @property
    def running_requests(self) -> int:
        return len(self._running)

    async def off_loop(self, prepare: Callable[..., T], *args: Any) -> T:
        """`prepare(*args)` (templating, tokenizing) on the preparation threads."""
        return await self._prepare_threads.run(prepare, *args)

    def _pace(self) -> float:
        return stream_interval(
            len(self._running), self._messages_per_second, self._min_stream_interval_s
        )

    async def run(self, request: pb.GenerateRequest) -> AsyncGenerator[pb.GenerateResponse, None]:
        """One request's messages; every way it can fail is a RequestError."""
        observation = RequestObservation(request, self._metrics)
        try:
            plan = await self._admit(request)
            observation.planned(plan)
            request_id = plan.engine_request.request_id
            self._running.add(request_id)
            try:
                async with contextlib.aclosing(_responses(plan, observation)) as responses:
                    async for response in responses:
                        yield response
            except EngineRequestError as error:
                raise invalid(error.param, str(error)) from None
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
        except RequestError as error:
            observation.status = error.status
            raise
        except (GeneratorExit, asyncio.CancelledError):
            observation.status = grpc.StatusCode.CANCELLED  # the caller went away
            raise
        finally:
            observation.end()

    async def _admit(self, request: pb.GenerateRequest) -> RequestPlan:
        """The request's plan, or the RequestError that refuses it."""
        if self.draining:
            raise RequestError(
                grpc.StatusCode.UNAVAILABLE,
                "The server is shutting down; retry on another replica.",
            )
        plan = await build_plan(self._registry, request, self._pace, self.off_loop)
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
        return plan


class EngineStreamError(RuntimeError):
    """The engine's stream ended without finishing every choice."""


async def _responses(
    plan: RequestPlan, observation: RequestObservation
) -> AsyncGenerator[pb.GenerateResponse, None]:
    """The request's messages; the engine's OutputChannel paces them by the request's pace."""
    engine = plan.model.engine
    request = plan.engine_request
    assemblers = [
        ChoiceAssembler(
            index,
            plan.model.tokenizer,
            prompt_tokens=plan.prompt_tokens,
            stops=plan.stops,
            output=plan.output,
            logprobs=request.params.logprobs,
            tool_calls=_tool_call_parser(plan),
            echo=plan.echo,
            continues=plan.continues,
        )
        for index in range(request.params.n)
    ]
    unfinished = len(assemblers)
    outputs_stream = cast(AsyncGenerator[list[SequenceOutput], None], engine.generate(request))
    # Closing the engine's stream (all choices done, even if stop strings finished them before
    # the engine knew; the client went away; a failure) makes the engine drop the request.
    async with contextlib.aclosing(outputs_stream):
        async for outputs in outputs_stream:
            observation.outputs(outputs)
            for output in outputs:  # one per choice, in index order (`Engine.generate`)
                index = output.index
                delta, finished = assemblers[index].feed((output,))
                if delta is not None:
                    yield pb.GenerateResponse(index=index, delta=delta)
                if finished is not None:
                    observation.finished(finished)
                    unfinished -= 1
                    if finished.reason == pb.FINISH_REASON_STOP_SEQUENCE and unfinished:
                        engine.finish_choice(request.request_id, index)
                    yield pb.GenerateResponse(index=index, finished=finished)
            if not unfinished:
                return
    raise EngineStreamError(
        f"engine {engine.name} ended request {request.request_id} with "
        f"{unfinished} unfinished choice(s)"
    )


def _tool_call_parser(plan: RequestPlan) -> ToolCallParser | None:
    """A parser per choice when the choices may call tools (each makes its own calls)."""
    if not plan.reads_tool_calls:
        return None
    tool_format = plan.model.tokenizer.tool_format
    return ToolCallParser(tool_format.syntax, tool_format.new_call_id)
