"""The facade (tests/support/servers.py) in front of the real inference service, with API keys."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest

from facade.keys import create_key
from facade.limits import KeyLimits
from facade.settings import FacadeSettings
from inference.config import ModelsConfig
from inference.servicer import InferenceServicer
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.integration.conftest import synthetic_models_config
from tests.support.servers import FacadeServerThread, InferenceServerThread

# The facade does not care which engine is behind the service: most facade tests run on the
# torch engine only, and the cancellation tests on every engine the inference tests use.
TORCH_ONLY = pytest.mark.parametrize("inference_server", ["torch"], indirect=True)

SYNTHETIC = "synthetic"


def synthetic_models(checkpoint: Path) -> ModelsConfig:
    """The synthetic engine as SYNTHETIC, for tests of what surrounds the engine (processes,
    limits, streams)."""
    return synthetic_models_config(SYNTHETIC, checkpoint)


@pytest.fixture(scope="module")
def synthetic_inference(tiny_qwen2_dir: Path) -> Iterator[InferenceServerThread]:
    server = InferenceServerThread(synthetic_models(tiny_qwen2_dir)).start()
    yield server
    server.stop()


@contextlib.contextmanager
def serve_without_backend(**settings: Any) -> Iterator[FacadeServerThread]:
    """A facade whose backend never answers, for tests of what happens before routing."""
    defaults: dict[str, Any] = {"backends": ["127.0.0.1:1"], "keys_file": None, "api_keys": ["k"]}
    with FacadeServerThread(FacadeSettings(**{**defaults, **settings})) as server:
        yield server


@dataclass(frozen=True)
class Keys:
    """API keys in the session's keys file, one per behaviour under test."""

    path: Path
    full: str  # every model, no limits
    limited: str  # 1 request per minute
    qwen_only: str  # only the Qwen model
    single: str  # one concurrent request
    tokens: str  # 400 tokens per minute


@pytest.fixture(scope="session")
def facade_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    path = tmp_path_factory.mktemp("facade") / "keys.json"
    full, _ = create_key(path, "full")
    limited, _ = create_key(path, "limited", limits=KeyLimits(requests_per_minute=1))
    qwen_only, _ = create_key(path, "qwen-only", models=["qwen"])
    single, _ = create_key(path, "single", limits=KeyLimits(max_concurrent=1))
    tokens, _ = create_key(path, "tokens", limits=KeyLimits(tokens_per_minute=400))
    return Keys(path, full, limited, qwen_only, single, tokens)


@pytest.fixture(scope="session")
def facade(
    inference_server: InferenceServerThread, facade_keys: Keys
) -> Iterator[FacadeServerThread]:
    with keyed_facade(inference_server, facade_keys) as server:
        yield server


@contextlib.contextmanager
def keyed_facade(inference: InferenceServerThread, keys: Keys) -> Iterator[FacadeServerThread]:
    """A facade in front of `inference` that knows the test keys."""
    settings = FacadeSettings(
        backends=[inference.address], keys_file=keys.path, api_keys=[], refresh_interval_s=1.0
    )
    server = FacadeServerThread(settings).start()
    yield server
    server.stop()


@pytest.fixture()
def client(facade: FacadeServerThread, facade_keys: Keys) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{facade.url}/v1", api_key=facade_keys.full, max_retries=0)


@pytest.fixture()
def aclient(facade: FacadeServerThread, facade_keys: Keys) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{facade.url}/v1", api_key=facade_keys.full, max_retries=0)


class Replica:
    """Another inference server on the session's loaded models: the real servicer, its own port.

    Replicas share the session server's registry (and engines), so starting one costs no model
    load; stopping one leaves the engines running, as when one replica's process goes away.
    """

    def __init__(self, inference: InferenceServerThread, port: int = 0) -> None:
        self._inference = inference
        self.port = port
        self.servicer: InferenceServicer | None = None
        self._server: grpc.aio.Server | None = None

    async def _start(self) -> None:
        assert self._inference.server is not None
        self.servicer = InferenceServicer(self._inference.server.registry)
        server = grpc.aio.server()
        pb_grpc.add_InferenceServicer_to_server(self.servicer, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    def start(self) -> Replica:
        self._inference.call(self._start())
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._inference.call(self._server.stop(0))
            self._server = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> int:
        return self.servicer.running_requests if self.servicer else 0
