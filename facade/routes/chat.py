"""POST /v1/chat/completions (and the other base URLs clients use): admit, then run.

Admission (facade/admission.py) refuses with a 4xx/5xx envelope whatever can fail before
the request runs; the `ChatRun` response (facade/chat_run.py) runs the admitted request.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from facade.admission import admit
from facade.auth import Principal
from facade.chat_run import ChatRun
from facade.deps import FacadeState, get_state, require_principal
from facade.openapi import error_responses, json_body, json_or_event_stream
from facade.request_context import request_record
from facade.schemas import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest

router = APIRouter()

# The documented path first; the others are what the seeds' clients' base URLs produce.
CHAT_PATHS = (
    "/v1/chat/completions",
    "/chat/completions",
    "/api/v1/chat/completions",
    "/v1/chat/completions/chat/completions",
)


async def create_chat_completion(
    request: Request,
    principal: Annotated[Principal, Depends(require_principal)],
    state: Annotated[FacadeState, Depends(get_state)],
) -> Response:
    """Creates a model response for the given chat conversation (OpenAI-compatible)."""
    started = time.perf_counter()
    # The body is read here rather than as a parameter so that a bad key is a 401 before any
    # body is looked at.
    body = await request.body()
    return ChatRun(state, await admit(body, principal, state, started, request_record(request)))


for _path in CHAT_PATHS:
    router.add_api_route(
        _path,
        create_chat_completion,
        methods=["POST"],
        include_in_schema=_path == CHAT_PATHS[0],
        response_model=None,
        responses={
            **json_or_event_stream(
                ChatCompletion,
                ChatCompletionChunk,
                "A chat completion, or with `stream` its chunks",
            ),
            **error_responses(400, 401, 404, 413, 429, 500, 503, 504),
        },
        # The body is read by hand (above); this documents what it is parsed as.
        openapi_extra=json_body(ChatCompletionRequest),
        summary="Create chat completion",
    )
