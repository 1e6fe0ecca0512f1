"""TrtllmEngine start/shutdown, engine selection, executor configuration and stats."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from types import ModuleType
from typing import cast

import pytest

from inference.engines.base import (
    EngineFinish,
    EngineRequest,
    EngineRequestError,
    EngineUnavailableError,
    SequenceOutput,
)
from inference.engines.manifest import EngineMismatchError, GpuInfo, RuntimeInfo, model_slug
from inference.engines.trtllm import TrtllmEngine, TrtllmEngineError
from inference.engines.trtllm.engine import _response_error
from tests.fakes.trtllm_fixtures import FAKE_RUNTIME, write_fake_engine
from tests.unit.engines.trtllm_engine.helpers import (
    MODEL_ID,
    EngineFactory,
    collect,
    request,
)


def stream(engine: TrtllmEngine, req: EngineRequest) -> AsyncGenerator[list[SequenceOutput]]:
    return cast(AsyncGenerator[list[SequenceOutput]], engine.generate(req))


def engine_for(tmp_path: Path, tokenizer_dir: Path, **kwargs: object) -> TrtllmEngine:
    engine_dir = write_fake_engine(tmp_path / "engine", model_id=MODEL_ID, vocab_size=100)
    options: dict = {"runtime": FAKE_RUNTIME, **kwargs}
    return TrtllmEngine(
        model_id=MODEL_ID, tokenizer_dir=tokenizer_dir, engine_dir=engine_dir, **options
    )


async def test_without_tensorrt_llm_start_says_what_to_install(
    tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("tensorrt_llm", "tensorrt_llm.bindings", "tensorrt_llm.bindings.executor"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    engine = engine_for(tmp_path, tokenizer_dir)
    with pytest.raises(EngineUnavailableError) as info:
        await engine.start()
    message = str(info.value)
    assert "cannot be imported" in message
    assert "tensorrt-llm==1.2.1" in message
    assert "nvcr.io/nvidia/tensorrt-llm/release:1.2.1" in message
    assert "NVIDIA's package index" in message
    assert "docs/gpu.md" in message


async def test_without_a_gpu_start_refuses(
    fake_trtllm: ModuleType, tmp_path: Path, tokenizer_dir: Path
) -> None:
    engine = engine_for(tmp_path, tokenizer_dir, runtime=RuntimeInfo(None, "1.2.1", None))
    built = len(fake_trtllm.fake_instances)
    with pytest.raises(EngineUnavailableError, match="no NVIDIA GPU"):
        await engine.start()
    assert len(fake_trtllm.fake_instances) == built  # no executor was created


async def test_an_engine_for_another_gpu_is_refused_with_the_build_command(
    fake_trtllm: ModuleType, tmp_path: Path, tokenizer_dir: Path
) -> None:
    ada = RuntimeInfo(GpuInfo("NVIDIA L40S", "8.9"), "1.2.1", "10.14.1.48")
    engine = engine_for(tmp_path, tokenizer_dir, runtime=ada)
    with pytest.raises(EngineMismatchError) as info:
        await engine.start()
    assert "compute capability 9.0" in str(info.value)
    assert f"tensorchat engines build --model {MODEL_ID} --gpu l40s" in str(info.value)
    assert f"--checkpoint {tokenizer_dir}" in str(info.value)


async def test_engines_root_picks_the_engine_for_this_gpu(
    fake_trtllm: ModuleType, tmp_path: Path, tokenizer_dir: Path
) -> None:
    root = tmp_path / "engines"
    write_fake_engine(root / model_slug(MODEL_ID) / "h100", model_id=MODEL_ID, vocab_size=100)
    engine = TrtllmEngine(
        model_id=MODEL_ID, tokenizer_dir=tokenizer_dir, engines_root=root, runtime=FAKE_RUNTIME
    )
    with pytest.raises(EngineUnavailableError, match="chosen under"):
        _ = engine.context_length  # unknown until start() picks the engine
    await engine.start()
    try:
        assert engine.engine_dir == root / model_slug(MODEL_ID) / "h100"
        assert fake_trtllm.fake_instances[-1].fake_model_path == engine.engine_dir
        assert engine.context_length == 1024
    finally:
        await engine.shutdown()


def test_limits_come_from_config_json_before_start(tmp_path: Path, tokenizer_dir: Path) -> None:
    engine_dir = write_fake_engine(
        tmp_path / "e", model_id=MODEL_ID, vocab_size=10, max_input_len=300, max_seq_len=512
    )
    engine = TrtllmEngine(model_id=MODEL_ID, tokenizer_dir=tokenizer_dir, engine_dir=engine_dir)
    # The executor's rule, not build_config.max_input_len: chunked context -> max_seq_len - 1.
    assert (engine.context_length, engine.max_input_len) == (512, 511)
    unchunked = TrtllmEngine(
        model_id=MODEL_ID,
        tokenizer_dir=tokenizer_dir,
        engine_dir=engine_dir,
        enable_chunked_context=False,
        max_num_tokens=256,
    )
    assert unchunked.max_input_len == 256  # min(max_seq_len - 1, max_num_tokens)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of engine_dir or engines_root"),
        ({"engine_dir": Path("a"), "engines_root": Path("b")}, "exactly one"),
        ({"engine_dir": Path("a"), "scheduler_policy": "fifo"}, "scheduler_policy"),
        ({"engine_dir": Path("a"), "kv_cache_free_gpu_memory_fraction": 1.5}, "fraction"),
    ],
)
def test_constructor_rejects_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrtllmEngine(model_id=MODEL_ID, tokenizer_dir=Path("t"), **kwargs)


async def test_executor_config_maps_the_options(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    await start_engine(
        kv_cache_free_gpu_memory_fraction=0.75,
        enable_block_reuse=False,
        enable_chunked_context=False,
        scheduler_policy="max_utilization",
        max_batch_size=4,
        max_num_tokens=1024,
    )
    config = fake_trtllm.fake_instances[-1].fake_config
    assert config.kv_cache_config.free_gpu_memory_fraction == 0.75
    assert config.kv_cache_config.enable_block_reuse is False
    assert config.enable_chunked_context is False
    assert config.scheduler_config.capacity_scheduler_policy == (
        fake_trtllm.CapacitySchedulerPolicy.MAX_UTILIZATION
    )
    assert (config.max_batch_size, config.max_num_tokens) == (4, 1024)
    assert config.max_beam_width == 1
    # Off unless the model option asks: it costs GPU memory for every request.
    assert config.gather_generation_logits is False
    assert config.normalize_log_probs is False


async def test_defaults_follow_trtllm_serve(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    await start_engine()
    config = fake_trtllm.fake_instances[-1].fake_config
    assert config.kv_cache_config.free_gpu_memory_fraction == 0.9
    assert config.kv_cache_config.enable_block_reuse is True
    assert config.enable_chunked_context is True
    assert config.scheduler_config.capacity_scheduler_policy == (
        fake_trtllm.CapacitySchedulerPolicy.GUARANTEED_NO_EVICT
    )
    assert (config.max_batch_size, config.max_num_tokens) == (16, 2048)  # the build limits


async def test_runtime_limits_above_the_build_are_clipped_and_logged(
    fake_trtllm: ModuleType, start_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        engine = await start_engine(max_batch_size=10_000, max_num_tokens=1 << 20)
    config = fake_trtllm.fake_instances[-1].fake_config
    assert (config.max_batch_size, config.max_num_tokens) == (16, 2048)
    assert engine.runtime_limits is not None
    assert engine.runtime_limits.max_batch_size == 16
    assert "max_batch_size=10000 is above the engine's build limit 16" in caplog.text
    assert "max_num_tokens=1048576 is above the engine's build limit 2048" in caplog.text


async def test_engine_without_paged_context_fmha_turns_reuse_and_chunking_off(
    fake_trtllm: ModuleType, tmp_path: Path, tokenizer_dir: Path
) -> None:
    engine = engine_for(tmp_path, tokenizer_dir)
    assert engine.engine_dir is not None
    config_path = engine.engine_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["build_config"]["plugin_config"]["use_paged_context_fmha"] = False
    config_path.write_text(json.dumps(config))
    await engine.start()
    try:
        executor_config = fake_trtllm.fake_instances[-1].fake_config
        assert executor_config.kv_cache_config.enable_block_reuse is False
        assert executor_config.enable_chunked_context is False
    finally:
        await engine.shutdown()


async def test_engine_gathering_context_logits_runs_and_says_it_runs_without_reuse(
    fake_trtllm: ModuleType, tmp_path: Path, tokenizer_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The executor turns reuse off for such an engine (trtGptModelInflightBatching.cpp
    # fixExecutorConfig); the adapter asks for what runs, and its start-up line says so.
    engine = engine_for(tmp_path, tokenizer_dir)
    assert engine.engine_dir is not None
    config_path = engine.engine_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["build_config"]["gather_context_logits"] = True
    config_path.write_text(json.dumps(config))
    with caplog.at_level(logging.INFO):
        await engine.start()
    try:
        executor_config = fake_trtllm.fake_instances[-1].fake_config
        assert executor_config.kv_cache_config.enable_block_reuse is False
        assert "built with --gather_context_logits: KV block reuse is off" in caplog.text
        assert "block_reuse=False" in caplog.text
    finally:
        await engine.shutdown()


async def test_stats_count_active_and_queued_requests_and_kv_usage(
    start_engine: EngineFactory,
) -> None:
    engine = await start_engine(max_batch_size=1)
    assert engine.stats().active_requests == 0
    first = stream(engine, request([1] * 40, temperature=0.0, max_tokens=60, ignore_eos=True))
    second = stream(
        engine, request([2] * 40, request_id="b", temperature=0.0, max_tokens=60, ignore_eos=True)
    )
    await anext(first)

    async def read_second() -> list[SequenceOutput]:
        return await anext(second)

    # The second request is enqueued on its first read; the executor keeps it queued.
    reader = asyncio.create_task(read_second())
    for _ in range(100):
        await asyncio.sleep(0.005)
        stats = engine.stats()
        if stats.queued_requests:
            break
    assert (stats.active_requests, stats.queued_requests) == (1, 1)
    assert 0.0 < stats.kv_cache_usage < 1.0
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    await second.aclose()
    await first.aclose()
    stats = engine.stats()
    assert (stats.active_requests, stats.queued_requests, stats.kv_cache_usage) == (0, 0, 0.0)


async def test_stats_report_the_kv_reuse_rate(start_engine: EngineFactory) -> None:
    engine = await start_engine()
    prompt = list(range(70))  # 3 blocks of 32; the first two can be reused
    await collect(engine, request(prompt, temperature=0.0, max_tokens=1))
    await collect(engine, request(prompt, temperature=0.0, max_tokens=1))
    # 2 reused out of 3 + 3 blocks looked up.
    assert engine.stats().kv_cache_hit_rate == pytest.approx(2 / 6)


async def test_shutdown_cancels_running_requests_and_joins_the_awaiter(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    outputs: list[SequenceOutput] = []
    first = asyncio.Event()

    async def read() -> None:
        async for batch in engine.generate(
            request([7, 7], temperature=0.0, max_tokens=100, ignore_eos=True, n=2)
        ):
            outputs.extend(batch)
            first.set()

    reader = asyncio.create_task(read())
    await first.wait()
    awaiter = engine._awaiter
    assert awaiter is not None and awaiter.is_alive()
    executor = fake_trtllm.fake_instances[-1]
    await engine.shutdown()
    await asyncio.wait_for(reader, 1.0)

    assert not awaiter.is_alive()
    assert executor.can_enqueue_requests() is False
    for index in (0, 1):
        finals = [o.finish for o in outputs if o.index == index and o.finish]
        assert finals == [EngineFinish.CANCELLED]
    with pytest.raises(RuntimeError, match="not running"):
        await collect(engine, request([1]))
    await engine.shutdown()  # idempotent
    assert engine.stats().active_requests == 0


def test_error_responses_are_classified() -> None:
    too_long = (
        "Prompt length (200) exceeds maximum input length (96). Set log level to info and check "
        "TRTGptModel logs for how maximum input length is set"
    )
    assert isinstance(_response_error(too_long), EngineRequestError)
    assert isinstance(
        _response_error("EndId (5000) is not within acceptable range [-1, 1000)."),
        EngineRequestError,
    )
    streaming_limit = (
        "Encountered an error when fetching new request: Request sequence length is potentially "
        "greater than max input length. This cannot be run unless streaming is disabled, context "
        "chunking is enabled or the GUARANTEED_NO_EVICT scheduling policy is used"
    )
    assert isinstance(_response_error(streaming_limit), EngineRequestError)
    # As the real executor words it: a prefix, the source line and a backtrace the client
    # does not get.
    real = _response_error(
        "Encountered an error when fetching new request: [TensorRT-LLM][ERROR] Assertion "
        "failed: EndId (5000) is not within acceptable range [-1, 1000). "
        "(/src/tensorrt_llm/cpp/tensorrt_llm/batch_manager/llmRequest.cpp:249)\n"
        "1       0x7f00 tensorrt_llm::common::throwRuntimeError(char const*, int, char const*)\n"
    )
    assert isinstance(real, EngineRequestError)
    assert str(real) == "EndId (5000) is not within acceptable range [-1, 1000)."
    fault = _response_error("[TensorRT-LLM][ERROR] CUDA runtime error: out of memory")
    assert isinstance(fault, TrtllmEngineError)
    assert not isinstance(fault, EngineRequestError)


async def test_make_fake_trtllm_engine_wraps_a_checkpoint_dir(
    make_fake_trtllm_engine: Callable[[Path, str], TrtllmEngine], tmp_path: Path
) -> None:
    checkpoint = tmp_path / "tiny"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"vocab_size": 321}))
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    (checkpoint / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    engine = make_fake_trtllm_engine(checkpoint, "org/Tiny-Model")
    await engine.start()
    try:
        assert engine.max_input_len < engine.context_length
        out = await collect(engine, request([1, 2, 3], temperature=0.0, max_tokens=3))
        assert len(out.tokens()) <= 3
        assert all(0 <= t < 321 for t in out.tokens())
    finally:
        await engine.shutdown()
