"""The Generate client against a stand-in servicer (the real one is tested in its own suite)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest

from tensorchat.bench.grpc_client import GrpcSender
from tensorchat.bench.target import Target
from tensorchat.bench.workload import RequestSpec
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc


class StandIn(pb_grpc.InferenceServicer):
    """Streams max_tokens tokens in messages of two, then Finished; NOT_FOUND for 'missing'."""

    def __init__(self) -> None:
        self.requests: list[pb.GenerateRequest] = []

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        self.requests.append(request)
        if request.model == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such model")
        total = request.stopping.max_tokens
        for first in range(0, total, 2):
            ids = list(range(first, min(first + 2, total)))
            yield pb.GenerateResponse(delta=pb.Delta(text="ab" * len(ids), token_ids=ids))
        yield pb.GenerateResponse(
            finished=pb.Finished(
                reason=pb.FINISH_REASON_LENGTH,
                usage=pb.Usage(prompt_tokens=3, completion_tokens=total),
            )
        )


@pytest.fixture
async def address() -> AsyncIterator[tuple[str, StandIn]]:
    server = grpc.aio.server()
    servicer = StandIn()  # type: ignore[abstract]
    pb_grpc.add_InferenceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(None)


SPEC = RequestSpec(messages=(("system", "s"), ("user", "u")), max_tokens=7)


async def test_counts_tokens_per_message_and_reads_usage(address: tuple[str, StandIn]) -> None:
    addr, servicer = address
    target = Target(kind="grpc", address=addr, model="m", ignore_eos=True, temperature=0.5)
    async with contextlib.aclosing(GrpcSender(target)) as sender:
        result = await sender.send(SPEC)
        second = await sender.send(SPEC)
    assert result.ok and result.finish_reason == "length"
    assert result.chunk_sizes == [2, 2, 2, 1] and result.sizes_are_tokens
    assert result.output_tokens == 7 and result.prompt_tokens == 3
    assert result.ttft is not None and result.ttft <= result.latency
    sent = servicer.requests[0]
    assert [(m.role, m.content) for m in sent.messages.messages] == [("system", "s"), ("user", "u")]
    assert sent.stopping.max_tokens == 7 and sent.stopping.ignore_eos
    assert sent.sampling.HasField("temperature") and sent.sampling.temperature == 0.5
    assert sent.output == pb.OUTPUT_MODE_TEXT_AND_TOKENS
    assert sent.request_id != servicer.requests[1].request_id
    assert second.ok


async def test_status_codes_become_error_kinds(address: tuple[str, StandIn]) -> None:
    addr, _ = address
    async with contextlib.aclosing(
        GrpcSender(Target(kind="grpc", address=addr, model="missing"))
    ) as sender:
        result = await sender.send(SPEC)
    assert not result.ok and result.error == "grpc_NOT_FOUND"
