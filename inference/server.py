"""The gRPC server: the Inference service, grpc.health.v1, reflection and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from inference.config import ModelsConfig
from inference.defaults import (
    ENGINE_STALL_S,
    MAX_CONCURRENT_REQUESTS,
    SHUTDOWN_GRACE_S,
    WAITING_INTERVAL_S,
)
from inference.engine_watch import EngineWatch
from inference.metrics import InferenceMetrics, serve_metrics
from inference.pacing import (
    DEFAULT_FLUSH_INTERVAL_S,
    DEFAULT_MESSAGES_PER_SECOND,
    DEFAULT_MIN_STREAM_INTERVAL_S,
)
from inference.registry import ModelRegistry
from inference.servicer import InferenceServicer
from tensorchat.freeze import tune_gc_for_serving
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
# Streams carry small messages, but Tokenize/Generate requests may hold long conversations.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# The facade pings its channels every few seconds (facade.backends, keepalive) to notice a
# frozen replica; by default gRPC servers count pings more often than every 5 minutes as
# abuse and close the connection (GOAWAY "too_many_pings"). Permit them, down to one a second.
KEEPALIVE_PERMIT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
]


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 50051
    max_concurrent_requests: int = MAX_CONCURRENT_REQUESTS
    # Stream messages per second of all streams together (see inference.pacing).
    max_messages_per_second: float = DEFAULT_MESSAGES_PER_SECOND
    # The least interval between a stream's messages below its share (inference.pacing).
    min_stream_interval_s: float = DEFAULT_MIN_STREAM_INTERVAL_S
    # How long GenerateMany holds deltas so that requests share writes (inference.generate_many).
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S
    # How often a GenerateMany generation still waiting its turn is told so (inference.defaults).
    waiting_interval_s: float = WAITING_INTERVAL_S
    # Requests in an engine and no token for this long: the engine is stalled (0: not checked).
    engine_stall_s: float = ENGINE_STALL_S
    shutdown_grace: float = SHUTDOWN_GRACE_S
    # Prometheus metrics over HTTP on this port (0: a free one; None: no metrics server).
    metrics_port: int | None = None


class InferenceServer:
    """Owns the grpc.aio server around a loaded registry; `start` returns the bound port."""

    def __init__(self, registry: ModelRegistry, options: ServerOptions) -> None:
        self.registry = registry
        self.options = options
        self.metrics = InferenceMetrics(list(registry))
        self.servicer = InferenceServicer(
            registry,
            max_concurrent_requests=options.max_concurrent_requests,
            max_messages_per_second=options.max_messages_per_second,
            min_stream_interval_s=options.min_stream_interval_s,
            flush_interval_s=options.flush_interval_s,
            waiting_interval_s=options.waiting_interval_s,
            metrics=self.metrics,
        )
        self._metrics_server: WSGIServer | None = None
        self.metrics_port = 0
        self.health = health_aio.HealthServicer()
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
                *KEEPALIVE_PERMIT_OPTIONS,
            ]
        )
        pb_grpc.add_InferenceServicer_to_server(self.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self._server,
        )
        self.port = 0
        self._engine_watch_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        self.port = self._server.add_insecure_port(f"{self.options.host}:{self.options.port}")
        if self.port == 0:
            raise OSError(f"cannot bind {self.options.host}:{self.options.port}")
        await self._server.start()
        if self.options.metrics_port is not None:
            self._metrics_server, _ = serve_metrics(
                self.metrics.registry, self.options.host, self.options.metrics_port
            )
            self.metrics_port = self._metrics_server.server_port
            log.info("metrics on http://%s:%d/metrics", self.options.host, self.metrics_port)
        await self._report_health(serving=True)
        if self.options.engine_stall_s > 0:
            self._engine_watch_task = asyncio.create_task(
                self._watch_engines(self.options.engine_stall_s), name="engine-watch"
            )
        log.info("inference service listening on %s:%d", self.options.host, self.port)
        return self.port

    async def _report_health(self, *, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING
        if not serving:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)  # ignored once draining: NOT_SERVING stays

    async def _watch_engines(self, stall_s: float) -> None:
        """Checks the engines every few seconds (inference.engine_watch): NOT_SERVING while one
        is stalled, and a probe request for a stalled one that holds nothing."""
        loop = asyncio.get_running_loop()
        probes: dict[str, asyncio.Task[None]] = {}
        reported: frozenset[str] = frozenset()
        try:
            watch = EngineWatch(self.registry, stall_s, loop.time())
            while True:
                await asyncio.sleep(min(stall_s / 4, 5.0))
                try:
                    watch.check(loop.time())
                    if watch.stalled != reported:  # (a failed report is tried again)
                        await self._report_stalled(watch.stalled)
                        reported = watch.stalled
                    self._probe_stalled(watch, probes)
                except Exception:  # the watch must outlive anything an engine throws
                    log.exception("engine check failed")
        except Exception:
            log.exception("the engine watch stopped")
        finally:
            for probe in probes.values():
                probe.cancel()
            await asyncio.gather(*probes.values(), return_exceptions=True)

    def _probe_stalled(self, watch: EngineWatch, probes: dict[str, asyncio.Task[None]]) -> None:
        """One probe request at a time per stalled engine that holds nothing (logged once per
        stall); a cleared model's probe, done by then, is forgotten."""
        for model in watch.to_probe():
            if model.id not in probes:
                log.info("probing the stalled engine of %s", model.id)
            elif not probes[model.id].done():
                continue
            probes[model.id] = asyncio.create_task(
                self.servicer.probe_engine(model.id), name="engine-probe"
            )
        for model_id in [m for m in probes if m not in watch.stalled]:
            probes.pop(model_id).cancel()

    async def _report_stalled(self, stalled: frozenset[str]) -> None:
        for model in self.registry:
            self.metrics.engine_stalled.labels(model.id).set(int(model.id in stalled))
        await self._report_health(serving=not stalled)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: report NOT_SERVING, let running requests finish within `grace`, then cancel."""
        await self.health.enter_graceful_shutdown()
        self.servicer.drain()
        if self._engine_watch_task is not None:
            self._engine_watch_task.cancel()
            await asyncio.gather(self._engine_watch_task, return_exceptions=True)
        await self._server.stop(self.options.shutdown_grace if grace is None else grace)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        await self.registry.shutdown()

    async def wait(self) -> None:
        await self._server.wait_for_termination()


async def run_inference_server(config: ModelsConfig, options: ServerOptions) -> None:
    """Loads the models, serves until SIGINT/SIGTERM, then drains and exits."""
    registry = await ModelRegistry.load(config)
    tune_gc_for_serving()
    server = InferenceServer(registry, options)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down: draining for up to %.0fs", options.shutdown_grace)
    await server.stop()
