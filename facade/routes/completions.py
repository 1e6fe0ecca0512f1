"""POST /v1/completions: OpenAI's legacy text completions, on the gRPC prompt / token_ids input.

Admitted like chat (facade/admission.py `admit_completion`) and run by the same
`GenerationRun` (facade/generation_run.py) in the `text_completion` shape
(facade/completions.py).
"""

from __future__ import annotations

from fastapi import APIRouter

from facade.admission import admit_completion
from facade.routes.registration import add_generating_routes
from facade.schemas import Completion, CompletionRequest

router = APIRouter()

# The documented path first; the others are what clients' base URLs produce (as for chat).
COMPLETION_PATHS = ("/v1/completions", "/completions", "/api/v1/completions")

add_generating_routes(
    router,
    COMPLETION_PATHS,
    admit_completion,
    name="create_completion",
    body=CompletionRequest,
    reply=Completion,
    # A chunk is a `text_completion` object too (as in OpenAI's own document).
    chunk=Completion,
    summary="Create completion",
    description="Creates a completion for the given prompt(s) (OpenAI's legacy text completions).",
    reply_description="A text completion, or with `stream` its chunks",
)
