"""The check's steps in order, each under its own timeout; results go to a Report.

Steps: prerequisites -> tiny checkpoints -> engine builds -> serve -> parity per model ->
one streamed request through the facade. A step that fails stops the steps that need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from enginebuild import flags as tools
from enginebuild.parity import Parity
from enginebuild.targets import Matrix, load_matrix
from facade.settings import FacadeSettings
from inference.config import EngineName
from tests.gpu.check import builds, serving
from tests.gpu.check.builds import TinyModel
from tests.gpu.check.report import Report
from tests.support.servers import FacadeServerThread, InferenceServerThread

T = TypeVar("T")

# Seconds per step; together within the 8 minutes the whole check may take. The two builds
# run side by side, so "builds" bounds both together.
STEP_TIMEOUTS_S: Mapping[str, float] = {
    "prerequisites": 20,
    "checkpoints": 40,
    "builds": 240,
    "serve": 80,
    "parity": 70,
    "stream": 30,
}
TOTAL_BUDGET_S = 480
# Where engines are planned when no GPU is here (--engine fake/torch): the fake's GPU.
PLAN_GPU_KEY = "h100"

CandidateEngine = Literal["trtllm", "fake", "torch"]
CANDIDATE_ENGINES: tuple[CandidateEngine, ...] = ("trtllm", "fake", "torch")


class StepTimeout(Exception):
    pass


def within(timeout_s: float, work: Callable[[], T]) -> T:
    """`work()` in a daemon thread; StepTimeout if it takes longer (the thread is abandoned)."""
    future: Future[T] = Future()

    def target() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to the caller
            future.set_exception(exc)

    threading.Thread(target=target, daemon=True, name="gpu-check-step").start()
    try:
        return future.result(timeout_s)
    except TimeoutError:
        raise StepTimeout(f"timed out after {timeout_s:g}s") from None


def run_async(timeout_s: float, coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(asyncio.wait_for(coro, timeout_s))
    except TimeoutError:
        raise StepTimeout(f"timed out after {timeout_s:g}s") from None


def _error(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, StepTimeout) else f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class CheckOptions:
    engine: CandidateEngine
    work: Path
    targets: Path | None = None  # the real build matrix (default build/targets.yaml)


def run_check(options: CheckOptions, report: Report) -> int:
    """Every check, one line each; returns the exit status (0: all passed)."""
    matrix = load_matrix(options.targets)
    gpu_key = _prerequisites(options, matrix, report)
    if gpu_key is None:
        return report.exit_status
    try:
        models = within(STEP_TIMEOUTS_S["checkpoints"], tiny_models)
    except Exception as exc:
        report.add("checkpoints", False, _error(exc))
        return report.exit_status
    report.add("checkpoints", True, ", ".join(f"{m.id}: {m.checkpoint}" for m in models))
    engine_dirs = _builds(options, models, gpu_key, report)
    served = [m for m in models if m.id in engine_dirs]
    for model in models:
        if model not in served:
            report.add(f"parity:{model.id}", False, "not run: its engine was not built")
    if served:
        with contextlib.ExitStack() as stack:
            _serve_and_compare(options, served, engine_dirs, stack, report)
    return report.exit_status


def tiny_models() -> list[TinyModel]:
    from tests.support.tiny_models import tiny_mistral_checkpoint, tiny_qwen2_checkpoint

    return [
        TinyModel("mistral", "llama", tiny_mistral_checkpoint()),
        TinyModel("qwen2", "qwen", tiny_qwen2_checkpoint()),
    ]


def _prerequisites(options: CheckOptions, matrix: Matrix, report: Report) -> str | None:
    """The GPU key to build for, or None (reported) when this machine cannot run the check."""
    try:
        problems, gpu_key = within(
            STEP_TIMEOUTS_S["prerequisites"], lambda: prerequisite_problems(options, matrix)
        )
    except Exception as exc:
        problems, gpu_key = [_error(exc)], None
    if problems or gpu_key is None:
        report.add("prerequisites", False, "; ".join(problems))
        return None
    where = "this GPU" if options.engine == "trtllm" else "planned only, no GPU needed"
    report.add("prerequisites", True, f"engine {options.engine}; build target {gpu_key} ({where})")
    return gpu_key


def prerequisite_problems(options: CheckOptions, matrix: Matrix) -> tuple[list[str], str | None]:
    """What this machine lacks for the check, and the GPU target key the engines are for."""
    from tests.support import tokenizer_assets as assets

    problems: list[str] = []
    for asset in (assets.mistral_spm_path, assets.qwen_tiktoken_path):
        try:
            asset()
        except assets.MissingAsset as exc:
            problems.append(str(exc))
    if options.engine != "trtllm":
        return problems, PLAN_GPU_KEY
    from inference.engines.manifest import detect_runtime, gpu_key_for

    runtime = detect_runtime()
    gpu_key = None
    if runtime.gpu is None:
        problems.append("no NVIDIA GPU (nvidia-smi found none); run in the image with --gpus")
    else:
        gpu_key = gpu_key_for(runtime.gpu.name)
        if gpu_key not in matrix.gpus:
            problems.append(f"{runtime.gpu.name} is not a GPU of the build matrix")
    if runtime.tensorrt_llm_version != matrix.tensorrt_llm_version:
        problems.append(
            f"TensorRT-LLM {runtime.tensorrt_llm_version or 'is not installed'}; the check needs "
            f"{matrix.tensorrt_llm_version} (the builder image, build/Dockerfile)"
        )
    for tool in (tools.TRTLLM_BUILD, tools.CONVERT_LLAMA, tools.CONVERT_QWEN):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not on PATH (the builder image installs it)")
    return problems, gpu_key


def _builds(
    options: CheckOptions, models: Sequence[TinyModel], gpu_key: str, report: Report
) -> dict[str, Path]:
    """Build (or, without a GPU, plan) every tiny engine; the engine dir of each that is ready."""
    matrix_file = builds.write_tiny_matrix(
        models, options.work / "tiny-targets.yaml", options.targets
    )
    matrix = load_matrix(matrix_file)
    out_root = options.work / "engines"
    ready: dict[str, Path] = {}
    if options.engine != "trtllm":
        # No GPU: check that the pipeline plans valid 1.2.1 commands for the tiny engines.
        for model in models:
            steps = builds.planned_steps(matrix, model, gpu_key, out_root)
            problems = builds.tool_problems(steps)
            names = ", ".join(s.name for s in steps)
            detail = "; ".join(problems) or f"planned, not run (--engine {options.engine}): {names}"
            if report.add(f"build:{model.id}", not problems, detail):
                ready[model.id] = builds.build_paths(matrix, model, gpu_key, out_root).engine_dir
        return ready
    commands = {m.id: builds.build_argv(m, matrix_file, out_root) for m in models}
    outcomes = builds.run_builds(commands, options.work / "logs", STEP_TIMEOUTS_S["builds"])
    for model in models:
        outcome = outcomes[model.id]
        engine_dir = builds.build_paths(matrix, model, gpu_key, out_root).engine_dir
        detail = f"{outcome.detail}: {engine_dir}" if outcome.ok else outcome.detail
        if report.add(f"build:{model.id}", outcome.ok, detail):
            ready[model.id] = engine_dir
    return ready


def candidate_options(
    options: CheckOptions, models: Sequence[TinyModel], engine_dirs: Mapping[str, Path]
) -> tuple[EngineName, dict[str, dict[str, object]]]:
    """The candidate's engine name and options per model id."""
    if options.engine == "torch":
        return "torch", {m.id: {"dtype": "float32", "device": "cpu"} for m in models}
    if options.engine == "trtllm":
        # Small KV caches: two engines (and the torch reference) share one GPU.
        return "trtllm", {
            m.id: {"engine_dir": engine_dirs[m.id], "kv_cache_free_gpu_memory_fraction": 0.2}
            for m in models
        }
    from tests.fakes.trtllm_fixtures import FAKE_RUNTIME, write_fake_engine

    limits = builds.TINY_LIMITS
    fake: dict[str, dict[str, object]] = {}
    for m in models:
        vocab_size = int(json.loads((m.checkpoint / "config.json").read_text())["vocab_size"])
        engine_dir = write_fake_engine(
            engine_dirs[m.id], model_id=m.id, vocab_size=vocab_size, checkpoint_dir=m.checkpoint,
            max_input_len=limits.max_input_len, max_seq_len=limits.max_seq_len,
            max_batch_size=limits.max_batch_size, max_num_tokens=limits.max_num_tokens,
        )  # fmt: skip
        fake[m.id] = {"engine_dir": engine_dir, "runtime": FAKE_RUNTIME}
    return "trtllm", fake


def _serve_and_compare(
    options: CheckOptions,
    models: Sequence[TinyModel],
    engine_dirs: Mapping[str, Path],
    stack: contextlib.ExitStack,
    report: Report,
) -> None:
    if options.engine == "fake":
        from tests.fakes.trtllm_fixtures import fake_trtllm_installed

        stack.enter_context(fake_trtllm_installed())
    engine, per_model = candidate_options(options, models, engine_dirs)
    config = serving.models_config(models, engine, per_model)
    try:
        inference = InferenceServerThread(config)
        stack.callback(inference.stop)
        inference.start(timeout=STEP_TIMEOUTS_S["serve"])
        facade = _facade(inference.address)
        stack.callback(facade.stop)
    except Exception as exc:
        report.add("serve", False, _error(exc))
        return
    served = ", ".join(m.id for m in config.models)
    report.add("serve", True, f"{served} on {inference.address}; facade on {facade.url}")
    name = "trtllm-fake" if options.engine == "fake" else options.engine
    timeout = STEP_TIMEOUTS_S["parity"] / len(models)
    for model in models:
        try:
            result = run_async(timeout, _parity(inference.address, model, name, timeout))
            report.add(f"parity:{model.id}", result.ok, result.detail)
        except Exception as exc:
            report.add(f"parity:{model.id}", False, _error(exc))
    try:
        ok, detail = run_async(
            STEP_TIMEOUTS_S["stream"],
            serving.stream_through_facade(facade.url, models[0].id, STEP_TIMEOUTS_S["stream"]),
        )
    except Exception as exc:
        ok, detail = False, _error(exc)
    report.add("stream:facade", ok, detail)


def _facade(address: str) -> FacadeServerThread:
    settings = FacadeSettings(
        backends=[address], keys_file=None, api_keys=[serving.API_KEY], access_log=False
    )
    return FacadeServerThread(settings).start(timeout=STEP_TIMEOUTS_S["serve"])


async def _parity(address: str, model: TinyModel, name: str, timeout_s: float) -> Parity:
    channel, client = serving.connect(address, timeout_s)
    async with channel:
        return await client.parity(model, name)
