"""Fixtures that run `TrtllmEngine` over the fake `tensorrt_llm.bindings.executor`.

TensorRT-LLM needs an NVIDIA GPU, so these install the fake bindings (tests/fakes/tensorrt_llm)
in `sys.modules` only while a test (or a session server) needs them, and build a fake engine
directory (config.json, rank0.engine, tensorchat-manifest.json) that passes the real manifest
checks against a fake detected runtime (an H100 with TensorRT-LLM 1.2.1).

Use in a conftest:
    from tests.fakes.trtllm_fixtures import fake_trtllm, make_fake_trtllm_engine  # noqa: F401
or, for a session-scoped server: `with fake_trtllm_installed(): ... fake_trtllm_engine(...)`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from inference.engines.manifest import (
    EngineManifest,
    GpuInfo,
    Limits,
    ManifestError,
    Precision,
    RuntimeInfo,
    checkpoint_sha256,
    write_manifest,
)
from inference.engines.trtllm import TrtllmEngine

FAKE_RUNTIME = RuntimeInfo(
    gpu=GpuInfo(name="NVIDIA H100 80GB HBM3", compute_capability="9.0"),
    tensorrt_llm_version="1.2.1",
    tensorrt_version="10.14.1.48",
)


def install_fake_trtllm(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Make `import tensorrt_llm.bindings.executor` find the fake; returns that module."""
    from tests.fakes import tensorrt_llm as package
    from tests.fakes.tensorrt_llm import bindings
    from tests.fakes.tensorrt_llm.bindings import executor

    monkeypatch.setitem(sys.modules, "tensorrt_llm", package)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.bindings", bindings)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.bindings.executor", executor)
    return executor


@contextmanager
def fake_trtllm_installed() -> Iterator[ModuleType]:
    """The fake bindings in sys.modules for the duration of the block (any scope)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield install_fake_trtllm(monkeypatch)


def write_fake_engine(
    engine_dir: Path,
    *,
    model_id: str,
    vocab_size: int,
    checkpoint_dir: Path | None = None,
    max_input_len: int = 768,
    max_seq_len: int = 1024,
    max_batch_size: int = 16,
    max_num_tokens: int = 2048,
    tokens_per_block: int = 32,
    gather_generation_logits: bool = False,
    gather_context_logits: bool = False,
    paged_context_fmha: bool = True,
    logits_dtype: str = "float32",
    runtime: RuntimeInfo = FAKE_RUNTIME,
) -> Path:
    """A directory the fake Executor loads and the manifest check accepts on `runtime`."""
    assert runtime.gpu is not None and runtime.tensorrt_llm_version is not None
    engine_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "version": runtime.tensorrt_llm_version,
        "pretrained_config": {
            "architecture": "LlamaForCausalLM",
            "dtype": "bfloat16",
            "vocab_size": vocab_size,
            "logits_dtype": logits_dtype,
            "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1},
        },
        "build_config": {
            "max_input_len": max_input_len,
            "max_seq_len": max_seq_len,
            "max_batch_size": max_batch_size,
            "max_num_tokens": max_num_tokens,
            "max_beam_width": 1,
            "gather_generation_logits": gather_generation_logits,
            "gather_context_logits": gather_context_logits,
            "plugin_config": {
                "tokens_per_block": tokens_per_block,
                "use_paged_context_fmha": paged_context_fmha,
                "context_fmha": True,
                "remove_input_padding": True,
            },
        },
    }
    (engine_dir / "config.json").write_text(json.dumps(config, indent=2))
    (engine_dir / "rank0.engine").write_bytes(b"fake serialized TensorRT engine")
    try:
        checkpoint_hash = checkpoint_sha256(checkpoint_dir) if checkpoint_dir else "0" * 64
    except ManifestError:  # a tokenizer-only dir in unit tests
        checkpoint_hash = "0" * 64
    write_manifest(
        engine_dir,
        EngineManifest(
            model_id=model_id,
            checkpoint_sha256=checkpoint_hash,
            tokenizer_sha256="0" * 64,
            gpu_key="h100",
            gpu_name=runtime.gpu.name,
            compute_capability=runtime.gpu.compute_capability,
            tensorrt_llm_version=runtime.tensorrt_llm_version,
            tensorrt_version=runtime.tensorrt_version,
            precision=Precision(weights="bf16", kv_cache="bf16"),
            limits=Limits(
                max_batch_size=max_batch_size,
                max_input_len=max_input_len,
                max_seq_len=max_seq_len,
                max_num_tokens=max_num_tokens,
            ),
        ),
    )
    return engine_dir


def fake_trtllm_engine(
    checkpoint_dir: Path, model_id: str, engines_root: Path, **engine_options: object
) -> TrtllmEngine:
    """A TrtllmEngine over a fake engine built for an HF checkpoint dir (vocab from its config).

    The fake bindings must be installed (fixture `fake_trtllm` or `fake_trtllm_installed()`)
    when the engine starts.
    """
    vocab_size = int(json.loads((checkpoint_dir / "config.json").read_text())["vocab_size"])
    engine_dir = write_fake_engine(
        engines_root / model_id.replace("/", "--").lower(),
        model_id=model_id,
        vocab_size=vocab_size,
        checkpoint_dir=checkpoint_dir,
    )
    return TrtllmEngine(
        model_id=model_id,
        tokenizer_dir=checkpoint_dir,
        engine_dir=engine_dir,
        runtime=FAKE_RUNTIME,
        **engine_options,  # type: ignore[arg-type]
    )


@pytest.fixture
def fake_trtllm(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The fake `tensorrt_llm.bindings.executor`, installed for this test only."""
    return install_fake_trtllm(monkeypatch)


@pytest.fixture
def make_fake_trtllm_engine(
    fake_trtllm: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Path, str], TrtllmEngine]:
    """Factory `(checkpoint_dir, model_id) -> TrtllmEngine` (not started) over the fake."""
    root = tmp_path_factory.mktemp("trtllm-engines")

    def make(checkpoint_dir: Path, model_id: str) -> TrtllmEngine:
        return fake_trtllm_engine(checkpoint_dir, model_id, root)

    return make
