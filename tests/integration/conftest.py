"""Session servers for integration tests: the real gRPC inference service on loopback."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from inference.config import ModelConfig, ModelsConfig
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.fakes.trtllm_fixtures import FAKE_RUNTIME, fake_trtllm_installed, write_fake_engine
from tests.support.servers import InferenceServerThread

MISTRAL_ID = "mistralai/Mistral-7B-Instruct-v0.3"
QWEN_ID = "Qwen/Qwen2.5-Coder-7B-Instruct"
TINY_CONTEXT = 256


def synthetic_models_config(model_id: str, checkpoint: Path) -> ModelsConfig:
    """One model on the synthetic engine, which borrows the checkpoint's tokenizer and computes
    nothing: 1000 tokens/s per choice."""
    return ModelsConfig(
        models=[
            ModelConfig(
                id=model_id,
                engine="synthetic",
                checkpoint=checkpoint,
                context_length=TINY_CONTEXT,
                options={"tokens_per_second": 1000.0, "tick_ms": 1.0},
            )
        ]
    )


def tiny_models_config(
    mistral_dir: Path,
    qwen2_dir: Path,
    *,
    engine: str = "torch",
    engines_root: Path | None = None,
    context: int = TINY_CONTEXT,
) -> ModelsConfig:
    """The two production model ids, served by tiny random checkpoints with the real tokenizers.

    With engine "trtllm" the TensorRT-LLM adapter drives the fake bindings (the caller installs
    them) over fake engine dirs under `engines_root`.
    """
    models = []
    for model_id, alias, checkpoint in (
        (MISTRAL_ID, "mistral", mistral_dir),
        (QWEN_ID, "qwen", qwen2_dir),
    ):
        options: dict[str, object] = {"max_batch_size": 16}
        if engine == "trtllm":
            assert engines_root is not None
            vocab_size = json.loads((checkpoint / "config.json").read_text())["vocab_size"]
            options["engine_dir"] = write_fake_engine(
                engines_root / alias,
                model_id=model_id,
                vocab_size=vocab_size,
                checkpoint_dir=checkpoint,
                max_input_len=context,
                max_seq_len=context,
            )
            options["runtime"] = FAKE_RUNTIME
            # Generation logits cost GPU memory for every request, so they are a per-model
            # option: on for Mistral (the top_logprobs tests), left off for Qwen.
            options["top_logprobs"] = alias == "mistral"
        models.append(
            ModelConfig(
                id=model_id,
                aliases=[alias],
                engine=engine,  # type: ignore[arg-type]
                checkpoint=checkpoint,
                context_length=context,
                options=options,
            )
        )
    return ModelsConfig(models=models)


@pytest.fixture(scope="session", params=["torch", "trtllm"], ids=["torch", "trtllm-fake"])
def inference_server(
    request: pytest.FixtureRequest,
    tiny_mistral_dir: Path,
    tiny_qwen2_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InferenceServerThread]:
    """The service on the torch engine, then on the TensorRT-LLM adapter over the fake bindings.

    Real TensorRT-LLM needs a GPU (tests/gpu runs it there); the fake keeps the adapter's
    request mapping, streaming and cancellation under the same servicer tests here.
    """
    with tiny_models_server(
        request.param, tiny_mistral_dir, tiny_qwen2_dir, tmp_path_factory
    ) as server:
        yield server


@contextlib.contextmanager
def tiny_models_server(
    engine: str,
    mistral_dir: Path,
    qwen2_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    context: int = TINY_CONTEXT,
) -> Iterator[InferenceServerThread]:
    """The two tiny models served on `engine` (torch, or trtllm over the fake bindings)."""
    with contextlib.ExitStack() as stack:
        if engine == "trtllm":
            stack.enter_context(fake_trtllm_installed())
        config = tiny_models_config(
            mistral_dir,
            qwen2_dir,
            engine=engine,
            engines_root=tmp_path_factory.mktemp("engines"),
            context=context,
        )
        server = InferenceServerThread(config).start()
        yield server
        server.stop()


@pytest.fixture()
def stub(inference_server: InferenceServerThread) -> Iterator[pb_grpc.InferenceStub]:
    with grpc.insecure_channel(inference_server.address) as channel:
        yield pb_grpc.InferenceStub(channel)


def wait_until_idle(server: InferenceServerThread) -> None:
    """Until no engine holds a request. No time limit of its own: how long it takes depends on
    the machine, so a test asserts what happened instead (`idle_tokens`); pytest-timeout
    stops a wait for a request that never leaves."""
    while server.active_requests():
        time.sleep(0.01)


def idle_tokens(server: InferenceServerThread) -> int:
    """Once no engine holds a request, the tokens they generated so far: two readings tell
    that a cancelled request left before its end, whatever the machine's speed."""
    wait_until_idle(server)
    return server.generated_tokens()
