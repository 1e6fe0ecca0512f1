"""How a generating route is made: admit, then run (facade/generation_run.py), on one POST
route per path clients' base URLs produce, the first documented (facade/openapi.py) with its
request body, its JSON or event-stream reply and the OpenAI error envelope for each refusal."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.responses import Response

from facade.admission import Admitted
from facade.auth import Principal
from facade.deps import FacadeState, get_state, require_principal
from facade.generation_run import GenerationRun
from facade.openapi import error_responses, json_body, json_or_event_stream
from facade.request_context import RequestRecord, request_record
from facade.routes.direct import DirectRoute

# facade/admission.py's admit functions: (body, principal, state, started, record).
Admit = Callable[[bytes, Principal, FacadeState, float, RequestRecord], Awaitable[Admitted]]


def add_generating_routes(
    router: APIRouter,
    paths: Sequence[str],
    admit: Admit,
    *,
    name: str,
    body: type[BaseModel],
    reply: type[BaseModel],
    chunk: type[BaseModel],
    summary: str,
    description: str,
    reply_description: str,
    typed_events: bool = False,
) -> None:
    """`name`, `summary` and `description` are the operation's (its OpenAPI operationId comes
    from the name); `reply`, `chunk` and `reply_description` are its 200's
    (facade/openapi.py `json_or_event_stream`; `typed_events` for the Responses API's)."""

    # Served by DirectRoute: the Depends below document the route (its security scheme);
    # the handler passes principal and state itself, without FastAPI's dependency injection.
    async def endpoint(
        request: Request,
        principal: Annotated[Principal, Depends(require_principal)],
        state: Annotated[FacadeState, Depends(get_state)],
    ) -> Response:
        started = time.perf_counter()
        # The body is read here rather than as a parameter so that a bad key is a 401 before
        # any body is looked at.
        admitted = await admit(
            await request.body(), principal, state, started, request_record(request)
        )
        return GenerationRun(state, admitted)

    for path in paths:
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            name=name,
            description=description,
            include_in_schema=path == paths[0],
            response_model=None,
            responses={
                **json_or_event_stream(reply, chunk, reply_description, typed_events=typed_events),
                **error_responses(400, 401, 404, 413, 429, 500, 503, 504),
            },
            # The body is read by the endpoint itself; this documents what it is parsed as.
            openapi_extra=json_body(body),
            summary=summary,
            route_class_override=DirectRoute,
        )
