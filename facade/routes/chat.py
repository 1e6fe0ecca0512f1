"""POST /v1/chat/completions (and the other base URLs clients use): admit, then run.

Admission (facade/admission.py) refuses with a 4xx/5xx envelope whatever can fail before
the request runs; the `GenerationRun` response (facade/generation_run.py) runs the admitted
request.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from facade.admission import admit
from facade.auth import Principal
from facade.deps import FacadeState, get_state, require_principal
from facade.generation_run import GenerationRun
from facade.request_context import request_record
from facade.routes.registration import add_post_routes
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
    admitted = await admit(body, principal, state, started, request_record(request))
    return GenerationRun(state, admitted)


add_post_routes(
    router,
    CHAT_PATHS,
    create_chat_completion,
    body=ChatCompletionRequest,
    reply=ChatCompletion,
    chunk=ChatCompletionChunk,
    description="A chat completion, or with `stream` its chunks",
    summary="Create chat completion",
)
