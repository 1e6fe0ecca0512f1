"""The facade's FastAPI application: `create_app(settings)` wires routes, state and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI

from facade.auth import KeyRing
from facade.backend_streams import StreamLimits
from facade.backends import BackendPool
from facade.bodylimit import BodySizeLimit
from facade.deps import FacadeState
from facade.errors import install_handlers
from facade.keywatch import start_key_reloads
from facade.limits import ConcurrencyGate, InMemoryLimiter, KeyLimits, Limiter
from facade.metrics import FacadeMetrics
from facade.openapi import install_openapi
from facade.readiness import ReadyNotifier
from facade.request_context import RequestContext
from facade.response_store import ResponseStore
from facade.responses_schemas import ResponseObject, ResponsesRequest, ResponseStreamEvent
from facade.routes import chat, completions, health, models, responses
from facade.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
)
from facade.settings import FacadeSettings
from tensorchat.freeze import tune_gc_for_serving

log = logging.getLogger(__name__)


def build_state(settings: FacadeSettings, limiter: Limiter | None = None) -> FacadeState:
    """The shared state of one app; the limiter is pluggable (a shared store for replicas)."""
    default_limits = KeyLimits(
        requests_per_minute=settings.default_requests_per_minute,
        tokens_per_minute=settings.default_tokens_per_minute,
        max_concurrent=settings.default_max_concurrent,
    )
    keyring = KeyRing(
        settings.keys_file,
        [key.get_secret_value() for key in settings.api_keys],
        default_limits,
        disabled=settings.auth_disabled,
    )
    pool = BackendPool(
        settings.backends,
        refresh_interval_s=settings.refresh_interval_s,
        probe_timeout_s=settings.probe_timeout_s,
        keepalive_s=settings.backend_keepalive_s,
        keepalive_timeout_s=settings.backend_keepalive_timeout_s,
        progress_timeout_s=settings.progress_timeout_s,
        stream_limits=StreamLimits(settings.stream_max_age_s, settings.stream_max_generations),
        on_change=ReadyNotifier.from_environment(),
    )
    metrics = FacadeMetrics()
    metrics.watch_keys(keyring)
    return FacadeState(
        settings=settings,
        pool=pool,
        keyring=keyring,
        limiter=limiter or _build_limiter(settings, metrics),
        gate=ConcurrencyGate(settings.max_concurrent_requests),
        metrics=metrics,
        responses=_build_response_store(settings),
    )


def _build_response_store(settings: FacadeSettings) -> ResponseStore | None:
    if settings.redis_url is None:
        return None
    return ResponseStore.from_url(settings.redis_url.get_secret_value(), settings.responses_ttl_s)


def _build_limiter(settings: FacadeSettings, metrics: FacadeMetrics) -> Limiter:
    if settings.redis_url is None:
        return InMemoryLimiter()
    # Imported only where used: redis-py adds about 0.1 s to the facade's start.
    from facade.limits_redis import RedisLimiter

    return RedisLimiter.from_url(
        settings.redis_url.get_secret_value(),
        fail_open=settings.redis_failure_mode == "open",
        on_store_error=lambda operation: metrics.limit_store_errors.labels(operation).inc(),
    )


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """`router`'s routes as the app's own, in order.

    Not `app.include_router`: FastAPI 0.165 keeps an included router behind an `_IncludedRouter`
    that matches each request twice (once to pick the router, once to pick its route), about
    14 µs of CPU per request (measured: docs/architecture.md). The routers set no
    prefix, tags or dependencies, so the routes and the OpenAPI document are the same.
    """
    app.router.routes.extend(router.routes)


def create_app(settings: FacadeSettings, *, limiter: Limiter | None = None) -> FastAPI:
    """The facade app; its lifespan opens the backend channels and closes them on shutdown."""
    state = build_state(settings, limiter)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if state.keyring.disabled:
            log.warning("authentication is disabled: every caller is accepted")
        elif not len(state.keyring):
            log.warning(
                "no API keys configured (keys file %s, TENSORCHAT_API_KEYS): every request "
                "will get 401; create one with `tensorchat keys create NAME`",
                settings.keys_file,
            )
        await state.pool.start()
        # Long-lived objects (FastAPI, pydantic, grpc) out of the GC's full collections,
        # which otherwise pause streaming under load, and no young collections of the live
        # requests' objects (see tensorchat.freeze).
        tune_gc_for_serving()
        reload_task = start_key_reloads(state.keyring, settings.keys_reload_interval_s)
        try:
            yield
        finally:
            reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reload_task
            await state.pool.close()
            await state.limiter.close()
            if state.responses is not None:
                await state.responses.close()

    app = FastAPI(
        title="tensorchat",
        summary="OpenAI-compatible chat completions over the tensorchat inference service",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/openapi.json" if settings.openapi_docs else None,
        docs_url="/docs" if settings.openapi_docs else None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry instrumentation stays off: the facade traces each
        # request itself (facade/request_context.py), and asking whether a global provider is
        # configured cost about 6 µs of CPU per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.facade = state
    install_handlers(app)
    install_openapi(
        app,
        request_models=[ChatCompletionRequest, CompletionRequest, ResponsesRequest],
        reply_models=[
            ChatCompletion,
            ChatCompletionChunk,
            Completion,
            ResponseObject,
            ResponseStreamEvent,
        ],
    )
    for router in (chat.router, completions.router, responses.router, models.router, health.router):
        add_routes(app, router)
    # Added last = outermost: the request id, span, access log and count see every response;
    # then refuse oversized bodies early.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext, metrics=state.metrics, access_log=settings.access_log)
    return app
