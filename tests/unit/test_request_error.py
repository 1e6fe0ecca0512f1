"""RequestError: one failure, sent as a Generate status or a GenerationEnd, read back whole."""

from __future__ import annotations

import grpc

from tensorchat.request_error import CODE_METADATA_KEY, PARAM_METADATA_KEY, RequestError
from tensorchat.v1 import inference_pb2 as pb


def test_a_generation_end_carries_every_field_and_reads_back_the_same() -> None:
    sent = RequestError(
        grpc.StatusCode.INVALID_ARGUMENT, "messages: too long", param="messages", code="ctx"
    )
    end = sent.end()
    assert end.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    got = RequestError.of_end(end)
    assert (got.status, got.message, got.param, got.code) == (
        sent.status,
        sent.message,
        sent.param,
        sent.code,
    )


def test_absent_fields_stay_absent_and_an_unknown_code_reads_as_unknown() -> None:
    got = RequestError.of_end(pb.GenerationEnd(code=999, message="?"))
    assert (got.status, got.param, got.code) == (grpc.StatusCode.UNKNOWN, None, None)


def test_generate_sends_param_and_code_as_trailing_metadata() -> None:
    error = RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", code="server_overloaded")
    assert error.trailing_metadata() == ((CODE_METADATA_KEY, "server_overloaded"),)
    error = RequestError(grpc.StatusCode.INVALID_ARGUMENT, "n: bad", param="n")
    assert error.trailing_metadata() == ((PARAM_METADATA_KEY, "n"),)
