"""How a generating route is registered: one POST route per path clients' base URLs produce,
the first documented, with the OpenAI error envelope for each refusal."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from facade.schemas import ErrorResponse


def add_post_routes(
    router: APIRouter,
    paths: Sequence[str],
    endpoint: Callable[..., Any],
    reply: type[BaseModel],
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
                200: {"model": reply, "description": "A completion, or an SSE stream"},
                400: {"model": ErrorResponse},
                401: {"model": ErrorResponse},
                404: {"model": ErrorResponse},
                429: {"model": ErrorResponse},
                503: {"model": ErrorResponse},
            },
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
            summary=summary,
        )
