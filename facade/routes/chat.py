"""POST /v1/chat/completions (and the other base URLs clients use): admit, then run.

Admission (facade/admission.py) refuses with a 4xx/5xx envelope whatever can fail before
the request runs; the `GenerationRun` response (facade/generation_run.py) runs the admitted
request.
"""

from __future__ import annotations

from fastapi import APIRouter

from facade.admission import admit
from facade.routes.registration import add_generating_routes
from facade.schemas import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest

router = APIRouter()

# The documented path first; the others are what the seeds' clients' base URLs produce.
CHAT_PATHS = (
    "/v1/chat/completions",
    "/chat/completions",
    "/api/v1/chat/completions",
    "/v1/chat/completions/chat/completions",
)

add_generating_routes(
    router,
    CHAT_PATHS,
    admit,
    name="create_chat_completion",
    body=ChatCompletionRequest,
    reply=ChatCompletion,
    chunk=ChatCompletionChunk,
    summary="Create chat completion",
    description="Creates a model response for the given chat conversation (OpenAI-compatible).",
    reply_description="A chat completion, or with `stream` its chunks",
)
