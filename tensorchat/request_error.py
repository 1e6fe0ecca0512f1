"""`RequestError`: how a request fails, as the protocol carries it between the two sides.

The service raises it; Generate sends it as the call's status and trailing metadata
(`trailing_metadata`), GenerateMany as the generation's `GenerationEnd` (`end`). The facade
gets it back from a GenerationEnd (`of_end`) and turns it into its HTTP error. Defined here,
at the protocol level, so that both sides share it without the facade importing the service.
"""

from __future__ import annotations

import grpc

from tensorchat.v1 import inference_pb2 as pb

# Trailing-metadata keys of a failed Generate call: the OpenAI parameter at fault and a
# machine-readable error code. GenerationEnd carries them as `param` and `error_code`.
PARAM_METADATA_KEY = "tensorchat-param"
CODE_METADATA_KEY = "tensorchat-code"

_STATUS_BY_CODE = {status.value[0]: status for status in grpc.StatusCode}


class RequestError(Exception):
    """A request the service refused or could not finish; `status` is its gRPC status."""

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

    @classmethod
    def of_end(cls, end: pb.GenerationEnd) -> RequestError:
        """The error a generation that ended this way (code not OK) failed with."""
        return cls(
            _STATUS_BY_CODE.get(end.code, grpc.StatusCode.UNKNOWN),
            end.message,
            param=end.param or None,
            code=end.error_code or None,
        )

    def end(self) -> pb.GenerationEnd:
        """The GenerationEnd that says what Generate's status and trailing metadata would."""
        return pb.GenerationEnd(
            code=self.status.value[0],
            message=self.message,
            param=self.param or "",
            error_code=self.code or "",
        )

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        pairs: list[tuple[str, str]] = []
        if self.param:
            pairs.append((PARAM_METADATA_KEY, self.param))
        if self.code:
            pairs.append((CODE_METADATA_KEY, self.code))
        return tuple(pairs)
