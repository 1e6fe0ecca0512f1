"""`tensorchat inference`: run the gRPC inference service."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from inference.config import MODELS_ENV_VAR
from inference.defaults import (
    ENGINE_STALL_S,
    MAX_CONCURRENT_REQUESTS,
    SHUTDOWN_GRACE_S,
    WAITING_INTERVAL_S,
)
from inference.pacing import (
    DEFAULT_FLUSH_INTERVAL_S,
    DEFAULT_MESSAGES_PER_SECOND,
    DEFAULT_MIN_STREAM_INTERVAL_S,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inference",
        help="run the gRPC inference service",
        description=(
            "Serve the models of a models config (default: the embedded SmolLM2-135M-Instruct) "
            "over gRPC: tensorchat.v1.Inference, grpc.health.v1 and server reflection. "
            "SIGINT/SIGTERM drain running requests, then exit."
        ),
    )
    add_inference_arguments(parser)
    parser.set_defaults(handler=_run)


def add_inference_arguments(parser: argparse.ArgumentParser, *, port_flag: str = "--port") -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 in pods)"
    )
    parser.add_argument(
        port_flag, dest="grpc_port", type=int, default=50051, help="gRPC port (default 50051)"
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help=f"models config file (YAML); default ${MODELS_ENV_VAR}, else the embedded model",
    )
    parser.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=MAX_CONCURRENT_REQUESTS,
        help="requests beyond this get RESOURCE_EXHAUSTED (default %(default)d)",
    )
    parser.add_argument(
        "--max-messages-per-second",
        type=float,
        default=DEFAULT_MESSAGES_PER_SECOND,
        help="stream messages per second all streams together may send; past it each stream's "
        "tokens share messages, at most one per stream per streams/budget seconds "
        f"(default {DEFAULT_MESSAGES_PER_SECOND:g}; 0: one message per engine step, always)",
    )
    parser.add_argument(
        "--min-stream-interval-ms",
        type=float,
        default=DEFAULT_MIN_STREAM_INTERVAL_S * 1000,
        help="a stream waits at least this long between messages even below its share of "
        "--max-messages-per-second, its tokens sharing them: less CPU per token at low load, "
        "for inter-token latency (default %(default)g: off; first tokens and finishes go at once)",
    )
    parser.add_argument(
        "--flush-interval-ms",
        type=float,
        default=DEFAULT_FLUSH_INTERVAL_S * 1000,
        help="on GenerateMany streams (the facade's), deltas wait at most this long to share "
        "a write with other generations' (default %(default)g; first tokens and ends go at "
        "once; 0: every event at once)",
    )
    parser.add_argument(
        "--waiting-interval-s",
        type=float,
        default=WAITING_INTERVAL_S,
        help="on GenerateMany streams, a generation that has sent nothing yet while its engine "
        "works for others is told so this often (a `waiting` event), so that the facade's "
        "TENSORCHAT_PROGRESS_TIMEOUT_S does not take it for a hung engine; keep that timeout "
        "at 3x this or more (default %(default)g)",
    )
    parser.add_argument(
        "--engine-stall-s",
        type=float,
        default=ENGINE_STALL_S,
        help="an engine that holds requests and generates no token for this long is stalled: "
        "the server reports NOT_SERVING on grpc.health (the facade stops routing to it, "
        "Kubernetes' probes take it out and restart it) until it generates again, and sends "
        "it a one-token probe request once it holds none; must exceed the longest prefill "
        "(default %(default)g; 0: not checked)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics (vLLM's, renamed tensorchat_inference_*) over HTTP on "
        "this port at /metrics, on --host (default: none)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=SHUTDOWN_GRACE_S,
        help="seconds running requests get to finish on SIGTERM (default %(default)g)",
    )


def _run(args: argparse.Namespace) -> int:
    from inference.config import resolve_models_config
    from inference.server import ServerOptions, run_inference_server
    from tensorchat.logs import configure_logging
    from tensorchat.tracing import configure_tracing

    configure_logging(args.log_level, args.log_format)
    configure_tracing("tensorchat-inference")
    options = ServerOptions(
        host=args.host,
        port=args.grpc_port,
        max_concurrent_requests=args.max_concurrent_requests,
        max_messages_per_second=args.max_messages_per_second,
        min_stream_interval_s=args.min_stream_interval_ms / 1000,
        flush_interval_s=args.flush_interval_ms / 1000,
        waiting_interval_s=args.waiting_interval_s,
        engine_stall_s=args.engine_stall_s,
        shutdown_grace=args.shutdown_grace,
        metrics_port=args.metrics_port,
    )
    asyncio.run(run_inference_server(resolve_models_config(args.models), options))
    return 0
