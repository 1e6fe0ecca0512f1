"""Pacing: past the servicer's message budget, a stream's tokens share its messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from inference.config import ModelConfig, ModelsConfig
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.integration.conftest import MISTRAL_ID, TINY_CONTEXT
from tests.support.servers import InferenceServerThread


def messages_and_tokens(address: str) -> tuple[int, int]:
    request = pb.GenerateRequest(
        model=MISTRAL_ID,
        prompt="Once upon a time",
        sampling=pb.SamplingParams(temperature=0.0),
        stopping=pb.StoppingCriteria(max_tokens=40, ignore_eos=True),
    )
    with grpc.insecure_channel(address) as channel:
        deltas = [
            response.delta
            for response in pb_grpc.InferenceStub(channel).Generate(request, timeout=60)
            if response.HasField("delta")
        ]
    return len(deltas), sum(len(delta.token_ids) for delta in deltas)


def tiny_config(tiny_mistral_dir: Path) -> ModelsConfig:
    return ModelsConfig(
        models=[
            ModelConfig(id=MISTRAL_ID, checkpoint=tiny_mistral_dir, context_length=TINY_CONTEXT)
        ]
    )


@pytest.fixture(scope="module")
def paced_server(tiny_mistral_dir: Path) -> Iterator[InferenceServerThread]:
    # A budget of 10 messages/s: one stream alone gets a message per 100 ms.
    server = InferenceServerThread(
        tiny_config(tiny_mistral_dir), max_messages_per_second=10.0
    ).start()
    yield server
    server.stop()


def test_paced_streams_carry_several_tokens_per_message(
    paced_server: InferenceServerThread,
) -> None:
    messages, tokens = messages_and_tokens(paced_server.address)
    assert tokens == 40
    assert messages < tokens / 2, f"{messages} messages for {tokens} tokens: no coalescing"


def test_a_minimum_stream_interval_paces_a_stream_well_within_the_budget(
    tiny_mistral_dir: Path,
) -> None:
    # The default budget leaves one stream unpaced; the minimum interval alone holds it.
    server = InferenceServerThread(tiny_config(tiny_mistral_dir), min_stream_interval_s=0.1).start()
    try:
        messages, tokens = messages_and_tokens(server.address)
    finally:
        server.stop()
    assert tokens == 40
    assert messages < tokens / 2, f"{messages} messages for {tokens} tokens: no coalescing"
