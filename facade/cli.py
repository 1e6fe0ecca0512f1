"""`tensorchat facade` (run the REST facade) and `tensorchat keys` (manage its API keys)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from facade.keys import add_keys_parser
from facade.settings import DEFAULT_KEYS_FILE, FacadeSettings
from tensorchat.logs import configure_logging


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "facade",
        help="run the OpenAI-compatible REST facade in front of inference services",
        description=(
            "Serve /v1/chat/completions and /v1/models over HTTP, authenticating API keys and "
            "forwarding to gRPC inference services. Every flag also reads TENSORCHAT_<NAME> "
            "(e.g. TENSORCHAT_BACKENDS); flags win."
        ),
    )
    parser.add_argument(
        "--backends",
        help="inference targets HOST:PORT[,...] or dns:///name:port (default 127.0.0.1:50051)",
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8000)")
    parser.add_argument("--keys-file", help=f"API keys file (default {DEFAULT_KEYS_FILE})")
    parser.add_argument(
        "--no-auth", action="store_true", help="accept requests without a key (local use only)"
    )
    _add_connection_flags(parser)
    parser.add_argument(
        "--redis-url",
        help="share per-key limits between replicas through this Redis, e.g. "
        "redis://redis:6379/0, and keep Responses API responses there (default: limits in "
        "this process only, no stored responses)",
    )
    parser.add_argument(
        "--responses-ttl-s",
        type=float,
        help="with --redis-url, keep stored responses this many seconds (default 86400)",
    )
    parser.add_argument(
        "--redis-failure-mode",
        choices=["open", "closed"],
        help="with Redis unreachable, admit without per-key limits (open, default) or "
        "answer 503 (closed)",
    )
    parser.set_defaults(handler=_run_facade_command)
    add_keys_parser(subparsers, DEFAULT_KEYS_FILE)


# Connection limits (facade/httpguard.py): setting name -> (type, help).
CONNECTION_FLAGS: dict[str, tuple[type, str]] = {
    "max_header_bytes": (int, "request line + headers larger than this get 431"),
    "max_headers": (int, "more header fields than this get 431"),
    "header_timeout_s": (float, "seconds to receive a request head (408 and close after)"),
    "body_timeout_s": (float, "seconds to receive a request body after its head (408 after)"),
    "keep_alive_timeout_s": (float, "seconds an idle keep-alive connection stays open"),
    "max_connections": (int, "connections served at once; more get 503 (0: no cap)"),
}


def _add_connection_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("HTTP connections")
    for name, (kind, text) in CONNECTION_FLAGS.items():
        default = FacadeSettings.model_fields[name].default
        flag = "--" + name.replace("_", "-")
        group.add_argument(flag, type=kind, help=f"{text} (default {default})")


def settings_from_args(args: argparse.Namespace) -> FacadeSettings:
    """Env-derived settings with the given flags on top."""
    overrides: dict[str, Any] = {}
    for name in (
        "backends",
        "host",
        "port",
        "keys_file",
        "redis_url",
        "redis_failure_mode",
        "responses_ttl_s",
        *CONNECTION_FLAGS,
    ):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "no_auth", False):
        overrides["auth_disabled"] = True
    for name in ("log_level", "log_format"):
        value = getattr(args, name, None)
        if value:
            overrides[name] = value
    return FacadeSettings(**overrides)


def _run_facade_command(args: argparse.Namespace) -> int:
    run_facade(settings_from_args(args))
    return 0


def _uvicorn_config(settings: FacadeSettings) -> Any:
    import uvicorn

    from facade.app import create_app
    from facade.httpguard import server_options

    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # the facade writes its own (facade/request_context.py)
        **server_options(settings),
    )


async def serve_facade(settings: FacadeSettings) -> None:
    """Run the facade on the current event loop until it is told to stop."""
    import uvicorn

    await uvicorn.Server(_uvicorn_config(settings)).serve()


def run_facade(settings: FacadeSettings) -> None:
    """Run the facade in this process (blocking), with logging set up."""
    from tensorchat.tracing import configure_tracing

    configure_logging(settings.log_level, settings.log_format)
    configure_tracing("tensorchat-facade")
    try:
        # uvloop's event loop costs a fraction of asyncio's per event, and every streamed
        # token is a few events; grpc.aio runs on it. (uvicorn[standard] installs it.)
        import uvloop
    except ImportError:
        asyncio.run(serve_facade(settings))
    else:
        uvloop.run(serve_facade(settings))
