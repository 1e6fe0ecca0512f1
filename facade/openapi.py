"""The facade's OpenAPI document (/openapi.json with `openapi_docs`), accurate for generators.

FastAPI derives most of it from the routes. What it cannot see is completed here, in one
place: request bodies that a route reads itself (the chat route reads the raw body so that a
bad key is a 401 before the body is parsed; `json_body` declares the model it is parsed
with), the `text/event-stream` reply of `"stream": true`, the error envelope of every status
a route can answer, and no 422: FastAPI documents one for every route with parameters, but
the facade answers invalid input with a 400 in OpenAI's envelope (facade/errors.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from facade.schemas import ErrorResponse

_REF = "#/components/schemas/{model}"

# Every status the facade answers with the error envelope, and when (facade/errors.py).
ERROR_STATUSES: dict[int, str] = {
    400: "Invalid request: the message names the parameter (`param`)",
    401: "Missing or invalid API key",
    404: "Unknown model, or one this key may not use",
    413: "Request body too large",
    429: "Rate limit of the key (`Retry-After`, x-ratelimit-* headers) or server overloaded",
    500: "Internal error; the message carries the request id",
    503: "No backend serves the model right now (`Retry-After`)",
    504: "The request ran past the server's time limit",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting the error envelope for these statuses."""
    return {
        status: {"model": ErrorResponse, "description": ERROR_STATUSES[status]}
        for status in statuses
    }


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra=` for a route that parses its JSON body with `model` itself."""
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def json_or_event_stream(
    reply: type[BaseModel], chunk: type[BaseModel], description: str, *, typed_events: bool = False
) -> dict[int | str, dict[str, Any]]:
    """A 200 that is one JSON `reply`, or with `"stream": true` server-sent `chunk` events:
    data-only chunks ending with `[DONE]` (chat and text completions), or with `typed_events`
    named events (the Responses API: facade/responses_output.py)."""
    if typed_events:
        stream_text = (
            f'With `"stream": true`: server-sent events `event: <type>` and `data: '
            f"<{chunk.__name__} JSON>` with that `type` and a `sequence_number` from 0, ending "
            "with `response.completed` or `response.incomplete`; no `[DONE]`. An error after "
            "the stream began is an `error` event, then `response.failed`."
        )
    else:
        stream_text = (
            f'With `"stream": true`: server-sent events `data: <{chunk.__name__} JSON>`, one '
            "per chunk, then `data: [DONE]`. An error after the stream began is one more "
            "event, `data: <ErrorResponse JSON>`, then `data: [DONE]`."
        )
    return {
        200: {
            "description": description,
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(model=reply.__name__)}},
                "text/event-stream": {"schema": {"type": "string", "description": stream_text}},
            },
        }
    }


def install_openapi(
    app: FastAPI,
    request_models: Iterable[type[BaseModel]],
    reply_models: Iterable[type[BaseModel]] = (),
) -> None:
    """Serve the completed document: the models that routes name by `$ref` only (request
    bodies read by hand, stream chunks) are added to its components."""
    extra: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((model, "validation") for model in request_models),
        *((model, "serialization") for model in reply_models),
    ]

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            _add_models(document, extra)
            _drop_validation_errors(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _add_models(
    document: dict[str, Any], models: list[tuple[type[BaseModel], JsonSchemaMode]]
) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    # Every model, the named ones included, comes back in $defs (the first value only
    # points there).
    _, definitions = models_json_schema(models, ref_template=_REF)
    for name, schema in definitions.get("$defs", {}).items():
        existing = schemas.setdefault(name, schema)
        # Two models of one name (one for requests, one for replies) would need two names.
        if existing != schema:
            raise ValueError(f"OpenAPI component {name!r} has two different schemas")


def _drop_validation_errors(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
