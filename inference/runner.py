"""Admits requests and runs each on its engine: the one path Generate and GenerateMany share.

Every way a request can fail comes out as the RequestError whose status its caller gets.
The servicer drives both RPCs through `RequestRunner.run`; nothing here knows about gRPC
calls or GenerateMany streams.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator

import grpc

from inference.engines.base import EngineRequestError
from inference.errors import RequestError, invalid
from inference.generation import stream_generation
from inference.pacing import DEFAULT_MESSAGES_PER_SECOND, stream_interval
from inference.prepare import build_plan
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
        self._draining = False

    @property
    def running_requests(self) -> int:
        return len(self._running)

    def drain(self) -> None:
        """Refuse new requests with UNAVAILABLE from now on; running ones go on."""
        self._draining = True

    def _pace(self) -> float:
        return stream_interval(len(self._running), self._messages_per_second)

    async def run(self, request: pb.GenerateRequest) -> AsyncGenerator[pb.GenerateResponse, None]:
        """One request's messages; every way it can fail is a RequestError."""
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
