"""Request errors carried to gRPC status codes, with machine-readable metadata for the facade."""

from __future__ import annotations

import grpc

# Trailing-metadata keys: the OpenAI parameter at fault and a machine-readable error code.
# The facade turns them into the `param` and `code` of its OpenAI error envelope.
PARAM_METADATA_KEY = "tensorchat-param"
CODE_METADATA_KEY = "tensorchat-code"


class RequestError(Exception):
    """A request the service refuses; `status` is its gRPC status code."""

    def __init__(
        self,
        status: grpc.StatusCode,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        pairs: list[tuple[str, str]] = []
        if self.param:
            pairs.append((PARAM_METADATA_KEY, self.param))
        if self.code:
            pairs.append((CODE_METADATA_KEY, self.code))
        return tuple(pairs)


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
