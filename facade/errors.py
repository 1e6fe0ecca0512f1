"""Every error the facade returns, as one table: HTTP status -> OpenAI error envelope.

All failures (bad JSON, validation, auth, limits, unknown routes, gRPC statuses from the
inference service, unexpected exceptions) leave the facade as
`{"error": {"message", "type", "param", "code"}}`, the shape the `openai` SDK parses into
its exception classes. Bad input is a 4xx, never a 500.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from tensorchat.logs import quoted
from tensorchat.request_error import RequestError

log = logging.getLogger(__name__)

# The one table: status -> (OpenAI error type, default code). The types are the ones the
# OpenAI API itself uses; clients branch on status and `code`, so both are stable.
ERROR_TABLE: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("invalid_request_error", "request_timeout"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    431: ("invalid_request_error", "request_header_fields_too_large"),
    500: ("server_error", "internal_error"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "timeout"),
}

# gRPC status of the inference service -> HTTP status; anything else is a 500.
GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# The inference service reports a prompt that does not fit as INVALID_ARGUMENT with both
# numbers in the message; this is how the facade recognises it without parsing numbers.
_CONTEXT_RE = re.compile(r"context[ _-]?(length|window)|maximum context", re.IGNORECASE)


class APIError(Exception):
    """An error with its HTTP status; rendered as the OpenAI envelope by `envelope()`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type, default_code = ERROR_TABLE.get(status, ERROR_TABLE[500])
        self.code = code if code is not None else default_code
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return json.dumps(self.envelope(), ensure_ascii=False).encode()

    def response(self) -> Response:
        return Response(
            self.body(),
            status_code=self.status,
            headers=self.headers,
            media_type="application/json",
        )


def clip(text: str, limit: int = 256) -> str:
    """`text` as an error message may quote it: a client's 1 MB model name is not sent back."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{clip(model)}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def rate_limited(message: str, retry_after_s: float, code: str = "rate_limit_exceeded") -> APIError:
    # Retry-After takes whole seconds; round up so a client that obeys it is admitted.
    seconds = max(1, math.ceil(retry_after_s))
    return APIError(429, message, code=code, headers={"Retry-After": str(seconds)})


def from_request_error(
    error: RequestError,
    request_id: str,
    model: str,
    param_name: Callable[[str], str] = lambda param: param,
) -> APIError:
    """Translate a failed request into the envelope its gRPC status calls for; `param_name`
    turns the field the service names into the client's parameter (facade/translate.py,
    `openai_param`)."""
    details = error.message or error.status.name
    status = GRPC_TO_HTTP.get(error.status, 500)
    if status == 400:
        param, err_code = error.param, error.code
        if err_code is None and _CONTEXT_RE.search(details):
            err_code, param = "context_length_exceeded", param or "messages"
        if param and details.startswith(f"{param}: "):
            # The service prefixes its messages with the field; OpenAI's messages are prose
            # and the field travels in `param`, except for short "is required"-style notes.
            rest = details[len(param) + 2 :]
            param = param_name(param)
            details = rest if rest[:1].isupper() else f"Invalid '{param}': {rest}"
        elif param:
            param = param_name(param)
        return APIError(400, details, param=param, code=err_code)
    if status == 404:
        return model_not_found(model)
    if status == 429:
        return rate_limited(details, 1.0, code=error.code or "server_overloaded")
    if status == 503:
        return APIError(
            503, f"The inference backend is unavailable: {details}", headers={"Retry-After": "1"}
        )
    if status == 500:
        # Internal details stay in our logs; the client gets an id to quote.
        log.error("backend error for %s: %s %s", request_id, error.status.name, details)
        return APIError(
            500, f"The server had an error processing your request (request id {request_id})."
        )
    return APIError(status, details)


# Union-branch tags pydantic adds to an error's location ("str", "list[str]",
# "function-after[...]", model class names); they are not part of the parameter's path.
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "literal"}
_LOC_ROOTS = {"body", "query", "path", "header", "cookie"}


def param_from_loc(loc: Sequence[int | str]) -> str | None:
    """("body", "messages", 0, "content") -> "messages[0].content"."""
    parts: list[str] = []
    # FastAPI prefixes where the value came from; the client knows it by its name alone.
    for item in loc[1:] if loc and loc[0] in _LOC_ROOTS else loc:
        if isinstance(item, int):
            if parts:
                parts[-1] += f"[{item}]"
            continue
        if item in _TYPE_TAGS or item[:1].isupper() or any(c in item for c in "[]()-, "):
            continue
        parts.append(item)
    return ".".join(parts) or None


def from_validation(exc: RequestValidationError | ValidationError) -> APIError:
    """The first validation error, as OpenAI words it, with the parameter named."""
    errors = exc.errors()
    if not errors:
        return APIError(400, "Invalid request.")
    first = errors[0]
    kind = first.get("type", "")
    if kind == "json_invalid":
        return APIError(
            400,
            "We could not parse the JSON body of your request. "
            "The API expects a JSON object as the body.",
        )
    param = param_from_loc(first.get("loc", ()))
    if kind == "missing":
        if param is None:
            return APIError(400, "The request body is empty; expected a JSON object.")
        return APIError(400, f"Missing required parameter: '{param}'.", param=param)
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    given = first.get("input")
    if isinstance(given, int | float | str) and not isinstance(given, bool):
        shown = repr(given)
        if len(shown) <= 40 and shown not in message:
            message = f"{message}, got {shown}"
    if param is None:
        return APIError(400, f"Invalid request body: {message}.")
    return APIError(400, f"Invalid value for '{param}': {message}.", param=param)


def unexpected_error() -> APIError:
    """The 500 for a bug: no detail for the client (the log has it)."""
    return APIError(500, "The server had an error processing your request.")


def install_handlers(app: FastAPI) -> None:
    """Route every failure through the envelope."""

    async def on_api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return exc.response()

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return from_validation(exc).response()

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            err = APIError(
                404, f"Invalid URL ({request.method} {clip(request.url.path)})", code="unknown_url"
            )
        else:
            # Starlette's 405 carries `Allow` (RFC 9110 section 15.5.6 requires it).
            err = APIError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
        return err.response()

    async def on_client_disconnect(request: Request, _: Exception) -> Response:
        # The client went away while sending its body, or did not send it in time (the
        # connection layer then answered 408 itself): nothing failed here. 499 is what the
        # metrics count for the first; the connection is gone, so no one reads this response.
        log.info(
            "the upload of %s %s ended before its body was complete",
            request.method,
            quoted(request.url.path),
        )
        return Response(status_code=499)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, quoted(request.url.path))
        return unexpected_error().response()

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(ClientDisconnect, on_client_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
