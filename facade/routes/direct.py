"""The generating routes' handler: the caller and the shared state handed to the endpoint by
a direct call, not by FastAPI's dependency injection.

Measured on a 2-core machine: resolving `require_principal` and `get_state` through FastAPI's
request handler (`solve_dependencies`) cost about 85 µs of CPU per request through the ASGI
stack alone, 110-150 µs end to end (benchmarks/facade_overhead.py --max-tokens 1
--concurrency 32, paired blocks against 9adbaed), for a key check that takes about 1.3 µs.
The endpoint keeps its annotated signature, so FastAPI documents the route exactly as before
(the bearer security scheme included: tests/unit/facade/test_facade_openapi_document.py); only
serving it changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from facade.auth import Principal
from facade.deps import FacadeState, authenticate, state_of

# What the endpoint of a DirectRoute is called with: the request, its caller, the state.
DirectEndpoint = Callable[[Request, Principal, FacadeState], Awaitable[Response]]


class DirectRoute(APIRoute):
    """An APIRoute whose endpoint is `(request, principal, state) -> Response`: documented from
    its signature by FastAPI, served without dependency injection (see the module docstring)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.app = self._serve

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The route as a bare ASGI app, not FastAPI's wrapper, whose two AsyncExitStacks
        close what dependencies with `yield` opened (these routes have none): about 5 µs of
        CPU per request in-process. Nor Starlette's `request_response`, whose exception
        wrapper repeats the app's ExceptionMiddleware (the same handlers, over the same
        scope) and adds a send wrapper that every SSE event passes through. No route-level
        body limit either: facade/bodylimit.py has it."""
        request = Request(scope, receive, send)
        response = await self._handle(request)
        await response(scope, receive, send)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        # What FastAPI builds a route's app from (APIRoute.__init__, before `_serve` replaces
        # it): this route's handler wherever it is asked for, never one that injects.
        return self._handle

    async def _handle(self, request: Request) -> Response:
        state = state_of(request)
        endpoint = cast(DirectEndpoint, self.endpoint)
        return await endpoint(request, authenticate(request, state.keyring), state)
