"""The error table: every status gets the OpenAI envelope; gRPC statuses map to HTTP ones."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest
from fastapi import FastAPI

from facade.errors import (
    ERROR_TABLE,
    GRPC_TO_HTTP,
    APIError,
    from_request_error,
    install_handlers,
    param_from_loc,
    rate_limited,
)
from tensorchat.request_error import RequestError

ENVELOPE_KEYS = {"message", "type", "param", "code"}


@pytest.mark.parametrize("status", sorted(ERROR_TABLE))
def test_every_status_renders_the_envelope(status: int) -> None:
    error = APIError(status, "boom", param="p")
    body = json.loads(error.body())
    assert set(body) == {"error"}
    assert set(body["error"]) == ENVELOPE_KEYS
    assert body["error"]["type"] == ERROR_TABLE[status][0]
    assert body["error"]["code"] == ERROR_TABLE[status][1]
    assert body["error"]["param"] == "p"


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, "invalid_request_error", None),
        (401, "authentication_error", "invalid_api_key"),
        (404, "invalid_request_error", "not_found"),
        (429, "rate_limit_error", "rate_limit_exceeded"),
        (503, "server_error", "service_unavailable"),
    ],
)
def test_table_uses_openai_types(status: int, kind: str, code: str | None) -> None:
    assert ERROR_TABLE[status] == (kind, code)


def test_unknown_status_falls_back_to_server_error() -> None:
    assert APIError(418, "teapot").type == "server_error"


def test_rate_limited_rounds_retry_after_up() -> None:
    error = rate_limited("slow down", 0.2)
    assert error.status == 429 and error.headers == {"Retry-After": "1"}
    assert rate_limited("slow down", 12.01).headers["Retry-After"] == "13"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.CANCELLED, 500),
    ],
)
def test_grpc_status_to_http(code: grpc.StatusCode, status: int) -> None:
    assert GRPC_TO_HTTP.get(code, 500) == status
    error = from_request_error(RequestError(code, "details"), "chatcmpl-9", "m")
    assert error.status == status
    if status == 500:
        # Internal details stay in logs; the client gets the request id to quote.
        assert "chatcmpl-9" in error.message and "details" not in error.message


def test_context_overflow_keeps_both_numbers_and_gets_its_code() -> None:
    message = (
        "messages: This model's maximum context length is 1024 tokens. However, you requested "
        "1500 tokens (1400 in the messages, 100 in the completion)."
    )
    error = from_request_error(
        RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            message,
            param="messages",
            code="context_length_exceeded",
        ),
        "r",
        "m",
    )
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "messages")
    assert "1024" in error.message and "1500" in error.message
    assert error.message.startswith("This model's maximum context length")


def test_context_overflow_is_recognised_without_an_error_code() -> None:
    error = from_request_error(
        RequestError(
            grpc.StatusCode.INVALID_ARGUMENT, "maximum context length is 10 tokens, got 12"
        ),
        "r",
        "m",
    )
    assert error.code == "context_length_exceeded" and error.param == "messages"


def test_invalid_argument_names_the_param_from_metadata() -> None:
    error = from_request_error(
        RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "logit_bias: token id 99999 is outside the vocabulary (32768)",
            param="logit_bias",
        ),
        "r",
        "m",
    )
    assert error.param == "logit_bias"
    assert error.message == "Invalid 'logit_bias': token id 99999 is outside the vocabulary (32768)"


def test_overload_is_a_429_with_retry_after() -> None:
    error = from_request_error(
        RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, "at capacity", code="server_overloaded"),
        "r",
        "m",
    )
    assert error.status == 429 and error.type == "rate_limit_error"
    assert error.code == "server_overloaded" and error.headers["Retry-After"] == "1"


def test_not_found_is_model_not_found_naming_the_model_as_sent() -> None:
    error = from_request_error(RequestError(grpc.StatusCode.NOT_FOUND, "x"), "r", "My-Model")
    assert (error.status, error.code, error.param) == (404, "model_not_found", "model")
    assert "My-Model" in error.message


@pytest.mark.parametrize(
    ("loc", "param"),
    [
        (("body", "temperature"), "temperature"),
        (("messages", 0, "content"), "messages[0].content"),
        (("body", "stop", "list[str]", 2), "stop[2]"),
        (("stop", "str"), "stop"),
        (
            ("body", "messages", 1, "content", "function-after[_content(), str]"),
            "messages[1].content",
        ),
        (("body",), None),
        ((), None),
    ],
)
def test_param_from_loc(loc: tuple[int | str, ...], param: str | None) -> None:
    assert param_from_loc(loc) == param


async def test_handlers_turn_every_failure_into_the_envelope() -> None:
    app = FastAPI()
    install_handlers(app)

    @app.get("/api-error")
    async def api_error() -> None:
        raise APIError(429, "slow", headers={"Retry-After": "3"})

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("secret internals")

    @app.post("/typed")
    async def typed(x: int) -> int:
        return x

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        cases = {
            "api": await client.get("/api-error"),
            "crash": await client.get("/crash"),
            "unknown route": await client.get("/nope"),
            "wrong method": await client.get("/typed"),
            "bad query": await client.post("/typed?x=abc"),
        }
    expected = {
        "api": 429,
        "crash": 500,
        "unknown route": 404,
        "wrong method": 405,
        "bad query": 400,
    }
    for name, response in cases.items():
        assert response.status_code == expected[name], name
        assert set(response.json()["error"]) == ENVELOPE_KEYS, name
    assert cases["api"].headers["retry-after"] == "3"
    assert "secret internals" not in cases["crash"].text
    assert cases["unknown route"].json()["error"]["code"] == "unknown_url"
    assert cases["bad query"].json()["error"]["param"] == "x"
