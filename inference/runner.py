"""Admits requests and runs each on its engine: the one path Generate and GenerateMany share.

Every way a request can fail comes out as the RequestError whose status its caller gets.

Engines yield everything produced since the stream last read (see `Engine.generate`), and
each read becomes at most one merged Delta per choice: a reader that keeps up gets one
message per engine step, a lagging reader fewer, larger messages instead of a backlog.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import cast

import grpc

from inference.choices import ChoiceAssembler
from inference.engines.base import EngineRequestError, SequenceOutput
from inference.errors import RequestError, invalid
from inference.pacing import DEFAULT_MESSAGES_PER_SECOND, stream_interval
from inference.prepare import RequestPlan, build_plan
from inference.registry import ModelRegistry
from tensorchat.v1 import inference_pb2 as pb

log = logging.getLogger(__name__)


class RequestRunner:
    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_concurrent_requests: int = 1024,
        max_messages_per_second: float = DEFAULT_MESSAGES_PER_SECOND,
    ) -> None:
        self._registry = registry
        self._max_concurrent = max_concurrent_requests
        self._messages_per_second = max_messages_per_second
        self._running: set[str] = set()  # request ids
        self.draining = False  # new requests are refused with UNAVAILABLE

    @property
    def running_requests(self) -> int:
        return len(self._running)

    def _pace(self) -> float:
        return stream_interval(len(self._running), self._messages_per_second)

    async def run(self, request: pb.GenerateRequest) -> AsyncGenerator[pb.GenerateResponse, None]:
        """One request's messages; every way it can fail is a RequestError."""
        if self.draining:
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
            async with contextlib.aclosing(_responses(plan)) as responses:
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


class EngineStreamError(RuntimeError):
    """The engine's stream ended without finishing every choice."""


async def _responses(plan: RequestPlan) -> AsyncGenerator[pb.GenerateResponse, None]:
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
            for index, choice_outputs in _by_choice(outputs):
                delta, finished = assemblers[index].feed(choice_outputs)
                if delta is not None:
                    yield pb.GenerateResponse(index=index, delta=delta)
                if finished is not None:
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


def _by_choice(outputs: list[SequenceOutput]) -> list[tuple[int, list[SequenceOutput]]]:
    """Outputs grouped by choice index, in index order (the common n == 1 case without work)."""
    first = outputs[0].index if outputs else 0
    if all(output.index == first for output in outputs):
        return [(first, outputs)] if outputs else []
    groups: dict[int, list[SequenceOutput]] = {}
    for output in outputs:
        groups.setdefault(output.index, []).append(output)
    return sorted(groups.items())
