"""The service's common refusals, as `tensorchat.request_error.RequestError`s."""

from __future__ import annotations

import grpc

from tensorchat.request_error import RequestError

# Imported from here by the service's modules, with the refusals below.
__all__ = ["RequestError", "invalid", "model_not_found"]


def invalid(param: str, message: str, *, code: str | None = None) -> RequestError:
    """INVALID_ARGUMENT naming the field: the message starts with the field's name."""
    return RequestError(
        grpc.StatusCode.INVALID_ARGUMENT, f"{param}: {message}", param=param, code=code
    )


def model_not_found(name: str) -> RequestError:
    return RequestError(
        grpc.StatusCode.NOT_FOUND,
        f"The model {name!r} does not exist or is not served here.",
        param="model",
        code="model_not_found",
    )
