"""POST /v1/completions: OpenAI's legacy text completions, on the gRPC prompt / token_ids input.

Admitted like chat (facade/admission.py `admit_completion`) and run by the same
`GenerationRun` (facade/generation_run.py) in the `text_completion` shape
(facade/completions.py).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from facade.admission import admit_completion
from facade.auth import Principal
from facade.deps import FacadeState, get_state, require_principal
from facade.generation_run import GenerationRun
from facade.request_context import request_record
from facade.routes.registration import add_post_routes
from facade.schemas import Completion, CompletionRequest

router = APIRouter()

# The documented path first; the others are what clients' base URLs produce (as for chat).
COMPLETION_PATHS = ("/v1/completions", "/completions", "/api/v1/completions")


async def create_completion(
    request: Request,
    principal: Annotated[Principal, Depends(require_principal)],
    state: Annotated[FacadeState, Depends(get_state)],
) -> Response:
    """Creates a completion for the given prompt(s) (OpenAI's legacy text completions)."""
    started = time.perf_counter()
    # The body is read here so that a bad key is a 401 before any body is looked at.
    body = await request.body()
    admitted = await admit_completion(body, principal, state, started, request_record(request))
    return GenerationRun(state, admitted)


add_post_routes(
    router,
    COMPLETION_PATHS,
    create_completion,
    body=CompletionRequest,
    reply=Completion,
    # A chunk is a `text_completion` object too (as in OpenAI's own document).
    chunk=Completion,
    description="A text completion, or with `stream` its chunks",
    summary="Create completion",
)
