"""Fixtures for the TensorRT-LLM adapter tests: the fake bindings and small fake engines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from inference.engines.trtllm import TrtllmEngine
from tests.fakes.trtllm_fixtures import (  # noqa: F401  (fake_trtllm, make_fake_trtllm_engine: fixtures)
    FAKE_RUNTIME,
    fake_trtllm,
    make_fake_trtllm_engine,
    write_fake_engine,
)
from tests.unit.engines.trtllm_engine.helpers import (
    MAX_INPUT_LEN,
    MAX_SEQ_LEN,
    MODEL_ID,
    VOCAB,
    EngineFactory,
)


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> Path:
    """A checkpoint dir with only generation_config.json: the adapter reads nothing else."""
    path = tmp_path / "checkpoint"
    path.mkdir()
    (path / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [998, 999], "pad_token_id": 997})
    )
    return path


@pytest.fixture
async def start_engine(
    fake_trtllm: ModuleType,  # noqa: F811  (the fixture imported above)
    tokenizer_dir: Path,
    tmp_path: Path,
) -> AsyncIterator[EngineFactory]:
    """`await start_engine(vocab_size=..., **engine_kwargs)`: a started engine, shut down after."""
    engines: list[TrtllmEngine] = []

    async def start(
        *, vocab_size: int = VOCAB, engine: dict[str, Any] | None = None, **kwargs: Any
    ) -> TrtllmEngine:
        engine_dir = write_fake_engine(
            tmp_path / f"engine{len(engines)}",
            model_id=MODEL_ID,
            vocab_size=vocab_size,
            max_input_len=MAX_INPUT_LEN,
            max_seq_len=MAX_SEQ_LEN,
            **(engine or {}),
        )
        trt = TrtllmEngine(
            model_id=MODEL_ID,
            tokenizer_dir=tokenizer_dir,
            engine_dir=engine_dir,
            runtime=FAKE_RUNTIME,
            await_timeout_ms=10,
            **kwargs,
        )
        engines.append(trt)
        await trt.start()
        return trt

    yield start
    for trt in engines:
        await trt.shutdown()
