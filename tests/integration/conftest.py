"""Session servers for integration tests: the real gRPC inference service on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from inference.config import ModelConfig, ModelsConfig
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.support.servers import InferenceServerThread

MISTRAL_ID = "mistralai/Mistral-7B-Instruct-v0.3"
QWEN_ID = "Qwen/Qwen2.5-Coder-7B-Instruct"
TINY_CONTEXT = 256


def tiny_models_config(mistral_dir: Path, qwen2_dir: Path) -> ModelsConfig:
    """The two production model ids, served by tiny random checkpoints with the real tokenizers."""
    return ModelsConfig(
        models=[
            ModelConfig(
                id=MISTRAL_ID,
                aliases=["mistral"],
                engine="torch",
                checkpoint=mistral_dir,
                context_length=TINY_CONTEXT,
                options={"max_batch_size": 16},
            ),
            ModelConfig(
                id=QWEN_ID,
                aliases=["qwen"],
                engine="torch",
                checkpoint=qwen2_dir,
                context_length=TINY_CONTEXT,
                options={"max_batch_size": 16},
            ),
        ]
    )


@pytest.fixture(scope="session")
def inference_server(tiny_mistral_dir: Path, tiny_qwen2_dir: Path) -> Iterator[InferenceServerThread]:
    server = InferenceServerThread(tiny_models_config(tiny_mistral_dir, tiny_qwen2_dir)).start()
    yield server
    server.stop()


@pytest.fixture()
def stub(inference_server: InferenceServerThread) -> Iterator[pb_grpc.InferenceStub]:
    with grpc.insecure_channel(inference_server.address) as channel:
        yield pb_grpc.InferenceStub(channel)


def wait_until_idle(server: InferenceServerThread, timeout: float = 1.0) -> float:
    """Seconds until no engine has an active request; fails the test past `timeout`."""
    started = time.monotonic()
    while server.active_requests():
        if time.monotonic() - started > timeout:
            pytest.fail(f"engines still have {server.active_requests()} active request(s)")
        time.sleep(0.01)
    return time.monotonic() - started
