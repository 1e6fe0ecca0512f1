"""TrtllmEngine on a real GPU with real TensorRT-LLM 1.2.1: tiny engines vs the torch engine.

Skipped unless an NVIDIA GPU and the tensorrt_llm package are present (run inside the image
from inference/Dockerfile; see docs/gpu.md). Builds FP32 engines from the tiny random Mistral
and Qwen2 checkpoints (tests/conftest.py), so greedy tokens can be compared exactly with the
torch engine on the same weights.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from inference.engines.base import EngineFinish, EngineRequest, SequenceOutput
from inference.engines.manifest import (
    EngineManifest,
    Precision,
    detect_runtime,
    gpu_key_for,
    write_manifest,
)
from inference.sampling import SamplingParams
from tests.gpu.check.builds import TINY_LIMITS as LIMITS
from tests.gpu.check.serving import PROMPTS

RUNTIME = detect_runtime()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(RUNTIME.gpu is None, reason="needs an NVIDIA GPU (nvidia-smi found none)"),
    pytest.mark.skipif(
        importlib.util.find_spec("tensorrt_llm") is None,
        reason="needs tensorrt-llm 1.2.1 (run in the inference/Dockerfile image)",
    ),
]


def build_tiny_engine(checkpoint_dir: Path, model_id: str, engine_dir: Path) -> Path:
    """Build an FP32 engine with TensorRT-LLM's Python builder and write our manifest."""
    import tensorrt_llm
    from tensorrt_llm.models import MODEL_MAP

    architecture = json.loads((checkpoint_dir / "config.json").read_text())["architectures"][0]
    model_class = MODEL_MAP.get(architecture)
    if model_class is None:
        pytest.skip(f"TensorRT-LLM {tensorrt_llm.__version__} has no {architecture}")
    model = model_class.from_hugging_face(str(checkpoint_dir), dtype="float32")
    build_config = tensorrt_llm.BuildConfig(
        max_input_len=LIMITS.max_input_len,
        max_seq_len=LIMITS.max_seq_len,
        max_batch_size=LIMITS.max_batch_size,
        max_num_tokens=LIMITS.max_num_tokens,
    )
    tensorrt_llm.build(model, build_config).save(str(engine_dir))
    assert RUNTIME.gpu is not None and RUNTIME.tensorrt_llm_version is not None
    write_manifest(
        engine_dir,
        EngineManifest(
            model_id=model_id,
            checkpoint_sha256="tiny-test-checkpoint",
            tokenizer_sha256="tiny-test-tokenizer",
            gpu_key=gpu_key_for(RUNTIME.gpu.name) or "test",
            gpu_name=RUNTIME.gpu.name,
            compute_capability=RUNTIME.gpu.compute_capability,
            tensorrt_llm_version=RUNTIME.tensorrt_llm_version,
            tensorrt_version=RUNTIME.tensorrt_version,
            precision=Precision(weights="fp32", kv_cache="fp32"),
            limits=LIMITS,
        ),
    )
    return engine_dir


@pytest.fixture(scope="session")
def tiny_engines(
    tiny_mistral_dir: Path, tiny_qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[Path, Path]]]:
    """model name -> (checkpoint dir, engine dir)."""
    root = tmp_path_factory.mktemp("tiny-engines")
    with pytest.MonkeyPatch.context() as env:
        # Greedy parity needs plain FP32 arithmetic on both sides: no TF32 in TensorRT/cuBLAS.
        env.setenv("NVIDIA_TF32_OVERRIDE", "0")
        yield {
            name: (checkpoint, build_tiny_engine(checkpoint, f"tiny/{name}", root / name))
            for name, checkpoint in (("mistral", tiny_mistral_dir), ("qwen2", tiny_qwen2_dir))
        }


@pytest.fixture(params=["mistral", "qwen2"])
async def pair(
    request: pytest.FixtureRequest, tiny_engines: dict[str, tuple[Path, Path]]
) -> AsyncIterator[tuple[Any, Any]]:
    """(started TrtllmEngine, started TorchEngine) over the same tiny checkpoint."""
    from inference.engines.torch.engine import TorchEngine
    from inference.engines.trtllm import TrtllmEngine

    checkpoint, engine_dir = tiny_engines[request.param]
    trt = TrtllmEngine(
        model_id=f"tiny/{request.param}",
        tokenizer_dir=checkpoint,
        engine_dir=engine_dir,
        kv_cache_free_gpu_memory_fraction=0.2,
        top_logprobs=True,  # the top_logprobs comparisons below
    )
    torch_engine = TorchEngine(checkpoint)
    await trt.start()
    await torch_engine.start()
    try:
        yield trt, torch_engine
    finally:
        await trt.shutdown()
        await torch_engine.shutdown()


def gen_request(prompt: list[int], request_id: str = "gpu", **params: Any) -> EngineRequest:
    return EngineRequest(
        request_id=request_id, prompt_token_ids=prompt, params=SamplingParams(**params)
    )


async def run(engine: Any, req: EngineRequest) -> dict[int, list[SequenceOutput]]:
    outputs: dict[int, list[SequenceOutput]] = {}
    async for batch in engine.generate(req):
        for output in batch:
            outputs.setdefault(output.index, []).append(output)
    return outputs


def tokens(outputs: list[SequenceOutput]) -> list[int]:
    return [t for o in outputs for t in o.token_ids]


async def test_greedy_tokens_equal_the_torch_engine(pair: tuple[Any, Any]) -> None:
    trt, torch_engine = pair
    for prompt in PROMPTS:
        req = gen_request(list(prompt), temperature=0.0, max_tokens=12, ignore_eos=True)
        expected = tokens((await run(torch_engine, req))[0])
        got = await run(trt, req)
        assert tokens(got[0]) == expected, f"prompt {prompt}"
        assert got[0][-1].finish == EngineFinish.LENGTH


async def test_cancel_mid_stream_frees_the_slot(pair: tuple[Any, Any]) -> None:
    trt, _ = pair
    stream = trt.generate(gen_request([3, 4, 5], temperature=0.0, max_tokens=200, ignore_eos=True))
    received = 0
    async for batch in stream:
        received += sum(len(o.token_ids) for o in batch)
        if received >= 3:
            break
    await cast(Any, stream).aclose()
    assert trt.stats().active_requests == 0
    # The executor slot is free again: a new request runs to completion.
    req = gen_request([3, 4, 5], temperature=0.0, max_tokens=4, ignore_eos=True)
    assert len(tokens((await asyncio.wait_for(run(trt, req), 30))[0])) == 4


async def test_n_choices_are_seeded_and_reproducible(pair: tuple[Any, Any]) -> None:
    trt, _ = pair
    req = gen_request([7, 8, 9], temperature=1.0, seed=11, n=3, max_tokens=8, ignore_eos=True)
    first = await run(trt, req)
    second = await run(trt, req)
    assert sorted(first) == [0, 1, 2]
    for index in range(3):
        assert [o.finish for o in first[index] if o.finish] == [EngineFinish.LENGTH]
        assert len(tokens(first[index])) == 8
        assert tokens(first[index]) == tokens(second[index])


async def test_logprobs_and_finish_choice(pair: tuple[Any, Any]) -> None:
    trt, _ = pair
    req = gen_request(
        [10, 11, 12], request_id="fc", temperature=0.0, max_tokens=50, logprobs=True, n=2
    )
    seen: dict[int, list[SequenceOutput]] = {}
    async for batch in trt.generate(req):
        for output in batch:
            seen.setdefault(output.index, []).append(output)
            assert output.logprobs is not None
            assert len(output.logprobs) == len(output.token_ids)
            assert all(lp.logprob <= 0.0 for lp in output.logprobs)
        if len(tokens(seen.get(0, []))) >= 2 and not any(o.finish for o in seen[0]):
            trt.finish_choice("fc", 0)
    assert [o.finish for o in seen[0] if o.finish] == [EngineFinish.CANCELLED]
    assert seen[1][-1].finish in (EngineFinish.LENGTH, EngineFinish.EOS)
