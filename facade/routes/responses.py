"""POST /v1/responses (OpenAI's Responses API) and GET /v1/responses/{id} for a stored one.

Admitted as the chat request it means (facade/admission.py `admit_response`) and run by the
same `GenerationRun` (facade/chat_run.py) in the `response` shape (facade/responses_output.py).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from facade.admission import admit_response
from facade.auth import Principal
from facade.chat_run import GenerationRun
from facade.deps import FacadeState, get_state, require_principal
from facade.errors import APIError, clip
from facade.response_store import StoreUnavailable
from facade.responses_schemas import ResponseObject
from facade.routes.registration import add_post_routes
from facade.schemas import ErrorResponse

router = APIRouter()

# The documented path first; the others are what clients' base URLs produce (as for chat).
RESPONSE_PATHS = ("/v1/responses", "/responses", "/api/v1/responses")


async def create_response(
    request: Request,
    principal: Annotated[Principal, Depends(require_principal)],
    state: Annotated[FacadeState, Depends(get_state)],
) -> Response:
    """Creates a model response (OpenAI's Responses API)."""
    started = time.perf_counter()
    # The body is read here so that a bad key is a 401 before any body is looked at.
    return GenerationRun(
        state, await admit_response(await request.body(), principal, state, started)
    )


add_post_routes(router, RESPONSE_PATHS, create_response, ResponseObject, "Create response")


@router.get(
    "/v1/responses/{response_id}",
    response_model=ResponseObject,
    responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
    summary="Retrieve response",
)
async def retrieve_response(
    response_id: str,
    principal: Annotated[Principal, Depends(require_principal)],
    state: Annotated[FacadeState, Depends(get_state)],
) -> Response:
    """A stored response (with Redis, for `responses_ttl_s`), if this key created it."""
    stored = None
    if state.responses is not None:
        try:
            stored = await state.responses.load(response_id, principal.name)
        except StoreUnavailable as error:
            raise APIError(503, str(error), headers={"Retry-After": "1"}) from None
    if stored is None:
        message = f"Response with id '{clip(response_id)}' not found."
        raise APIError(404, message, param="response_id")
    return JSONResponse(stored.response)
