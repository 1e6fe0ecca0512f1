"""POST /v1/chat/completions (and the other base URLs clients use): admit, then run.

Admission (facade/admission.py) refuses with a 4xx/5xx envelope whatever can fail before
generation; the `GenerationRun` response (facade/chat_run.py) runs the admitted request.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from facade.admission import admit
from facade.auth import Principal
from facade.chat_run import GenerationRun
from facade.deps import FacadeState, get_state, require_principal
from facade.routes.registration import add_post_routes
from facade.schemas import ChatCompletion

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
    return GenerationRun(state, await admit(await request.body(), principal, state, started))


add_post_routes(
    router, CHAT_PATHS, create_chat_completion, ChatCompletion, "Create chat completion"
)
