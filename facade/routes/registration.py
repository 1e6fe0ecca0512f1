"""How a generating route is registered: one POST route per path clients' base URLs produce,
the first documented (facade/openapi.py) with its request body, its JSON or event-stream reply
and the OpenAI error envelope for each refusal."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from facade.openapi import error_responses, json_body, json_or_event_stream


def add_post_routes(
    router: APIRouter,
    paths: Sequence[str],
    endpoint: Callable[..., Any],
    *,
    body: type[BaseModel],
    reply: type[BaseModel],
    chunk: type[BaseModel],
    description: str,
    summary: str,
) -> None:
    for path in paths:
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            include_in_schema=path == paths[0],
            response_model=None,
            responses={
                **json_or_event_stream(reply, chunk, description),
                **error_responses(400, 401, 404, 413, 429, 500, 503, 504),
            },
            # The body is read by the endpoint itself; this documents what it is parsed as.
            openapi_extra=json_body(body),
            summary=summary,
        )
