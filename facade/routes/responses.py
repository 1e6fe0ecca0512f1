"""POST /v1/responses (OpenAI's Responses API) and GET /v1/responses/{id} for a stored one.

Admitted as the chat request it means (facade/admission.py `admit_response`) and run by the
same `GenerationRun` (facade/generation_run.py) in the `response` shape
(facade/responses_output.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.responses import Response

from facade.admission import admit_response
from facade.auth import Principal
from facade.deps import FacadeState, get_state, require_principal
from facade.errors import APIError, clip
from facade.openapi import error_responses
from facade.response_store import StoreUnavailable
from facade.responses_schemas import ResponseObject, ResponsesRequest, ResponseStreamEvent
from facade.routes.registration import add_generating_routes

router = APIRouter()

# The documented path first; the others are what clients' base URLs produce (as for chat).
RESPONSE_PATHS = ("/v1/responses", "/responses", "/api/v1/responses")

add_generating_routes(
    router,
    RESPONSE_PATHS,
    admit_response,
    name="create_response",
    body=ResponsesRequest,
    reply=ResponseObject,
    chunk=ResponseStreamEvent,
    typed_events=True,
    summary="Create response",
    description="Creates a model response (OpenAI's Responses API).",
    reply_description="A response, or with `stream` its typed events",
)


@router.get(
    "/v1/responses/{response_id}",
    response_model=ResponseObject,
    responses=error_responses(401, 404, 503),
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
