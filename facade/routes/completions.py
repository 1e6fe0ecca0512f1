"""POST /v1/completions: OpenAI's legacy text completions, on the gRPC prompt / token_ids input.

Admitted like chat (facade/admission.py `admit_completion`) and run by the same
`GenerationRun` (facade/chat_run.py) in the `text_completion` shape (facade/completions.py).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from facade.admission import admit_completion
from facade.auth import Principal
from facade.chat_run import GenerationRun
from facade.deps import FacadeState, get_state, require_principal
from facade.routes.registration import add_post_routes
from facade.schemas import Completion

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
    return GenerationRun(
        state, await admit_completion(await request.body(), principal, state, started)
    )


add_post_routes(router, COMPLETION_PATHS, create_completion, Completion, "Create completion")
