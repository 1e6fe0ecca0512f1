"""TrtllmEngine: compiled TensorRT-LLM engines run by the C++ Executor, behind `Engine`.

Pinned to TensorRT-LLM 1.2.1, the last release whose `tensorrt_llm.bindings.executor.Executor`
loads compiled engines. Threads: the executor runs its own batching loop in C++; one awaiter
thread here blocks in `await_responses` (it releases the GIL) and hands each batch of
responses to the asyncio loop with one `call_soon_threadsafe`; everything else (enqueue,
cancel, stats, the per-request state) happens on the event loop, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from inference.engines.base import (
    Engine,
    EngineRequest,
    EngineRequestError,
    EngineStats,
    EngineUnavailableError,
    SequenceOutput,
)
from inference.engines.channel import OutputChannel
from inference.engines.manifest import (
    PINNED_TENSORRT_LLM_VERSION,
    RuntimeInfo,
    check_engine,
    detect_runtime,
    select_engine,
)
from inference.engines.trtllm.config import (
    BIASABLE_LOGITS_DTYPES,
    EngineBuildConfig,
    GenerationDefaults,
    RuntimeLimits,
    clip_runtime_limits,
    longest_prompt,
)
from inference.engines.trtllm.guided import guided_decoding_config
from inference.engines.trtllm.requests import build_request, plan_stops
from inference.engines.trtllm.results import ResultConverter
from inference.engines.trtllm.timing import first_scheduled_at

if TYPE_CHECKING:
    from inference.text.tokenizer import ModelTokenizer

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "The trtllm engine needs an NVIDIA GPU and "
    f"tensorrt-llm=={PINNED_TENSORRT_LLM_VERSION}: run the GPU image built from "
    "inference/Dockerfile (FROM nvcr.io/nvidia/tensorrt-llm/release:"
    f"{PINNED_TENSORRT_LLM_VERSION}), or `pip install tensorrt-llm=={PINNED_TENSORRT_LLM_VERSION}` "
    "with NVIDIA's package index reachable (PyPI only hosts a stub that downloads the wheel "
    "from it); see docs/gpu.md. "
    "Without a GPU use `engine: torch`."
)
SCHEDULER_POLICIES = {
    "guaranteed_no_evict": "GUARANTEED_NO_EVICT",
    "max_utilization": "MAX_UTILIZATION",
}
# Error responses caused by the request itself (LlmRequest::validate and friends); anything
# else the executor reports is an engine fault.
_REQUEST_ERROR_MARKERS = (
    "exceeds maximum input length",
    "is not within acceptable range",
    "Incorrect sampling config",
    # executorImpl.cpp fetchNewRequests L1555-1563 at b35ac1b6: streaming, no chunked context,
    # a policy other than GUARANTEED_NO_EVICT, and prompt + max_tokens - 1 above the longest
    # prompt; a smaller max_tokens passes.
    "potentially greater than max input length",
)
# How long shutdown waits for the executor to confirm the cancellation of running requests.
_SHUTDOWN_DRAIN_S = 2.0


class TrtllmEngineError(RuntimeError):
    """The executor failed for a reason that is not the request's fault."""


@dataclass(eq=False)
class _Stream:
    request: EngineRequest
    converter: ResultConverter
    executor_id: int
    channel: OutputChannel
    executor_done: bool = False  # the executor sent its final response
    retired: bool = False


class TrtllmEngine(Engine):
    name = "trtllm"

    def __init__(
        self,
        *,
        model_id: str,
        tokenizer_dir: Path,
        engine_dir: Path | None = None,
        engines_root: Path | None = None,
        kv_cache_free_gpu_memory_fraction: float = 0.9,
        enable_block_reuse: bool = True,
        enable_chunked_context: bool = True,
        max_batch_size: int | None = None,
        max_num_tokens: int | None = None,
        scheduler_policy: str = "guaranteed_no_evict",
        top_logprobs: bool = False,
        runtime: RuntimeInfo | None = None,
        await_timeout_ms: int = 50,
        tokenizer: ModelTokenizer | None = None,
    ) -> None:
        """Configure only; `start()` picks the engine, imports TensorRT-LLM and loads it.

        `top_logprobs` starts the executor with gather_generation_logits, a fixed GPU cost for
        every request (see `_executor_config`); without it requests asking for top_logprobs are
        refused. `runtime` replaces GPU/version detection (tests); `await_timeout_ms` bounds
        how long shutdown waits for the awaiter thread. `tokenizer` turns on the executor's
        guided decoding (constrained requests are refused without it).
        """
        if (engine_dir is None) == (engines_root is None):
            raise ValueError("give exactly one of engine_dir or engines_root")
        if not 0.0 < kv_cache_free_gpu_memory_fraction <= 1.0:
            raise ValueError("kv_cache_free_gpu_memory_fraction must be in (0, 1]")
        if scheduler_policy not in SCHEDULER_POLICIES:
            raise ValueError(
                f"scheduler_policy must be one of {sorted(SCHEDULER_POLICIES)}, "
                f"got {scheduler_policy!r}"
            )
        self.model_id = model_id
        self.tokenizer_dir = Path(tokenizer_dir)
        self.engine_dir = Path(engine_dir) if engine_dir is not None else None
        self.engines_root = Path(engines_root) if engines_root is not None else None
        self._kv_fraction = kv_cache_free_gpu_memory_fraction
        self._block_reuse = enable_block_reuse
        self._chunked_context = enable_chunked_context
        self._max_batch_size = max_batch_size
        self._max_num_tokens = max_num_tokens
        self._scheduler_policy = scheduler_policy
        self._top_logprobs = top_logprobs
        self._runtime = runtime
        self._tokenizer = tokenizer
        self._await_timeout = timedelta(milliseconds=await_timeout_ms)
        self._trtllm: ModuleType | None = None
        self._executor: Any = None
        self._build: EngineBuildConfig | None = None
        self._defaults = GenerationDefaults()
        self.runtime_limits: RuntimeLimits | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._awaiter: threading.Thread | None = None
        self._stop = threading.Event()
        self._accepting = False
        self._streams: dict[int, _Stream] = {}  # by executor request id
        self._by_request_id: dict[str, _Stream] = {}
        self._drained = asyncio.Event()  # set whenever no stream is left
        self._last_iteration: Any = None
        self._generated_tokens = 0

    # -- limits the servicer validates against ------------------------------------------------

    @property
    def context_length(self) -> int:
        """Prompt plus completion tokens one sequence may hold (build_config.max_seq_len)."""
        return self._build_config().max_seq_len

    @property
    def max_input_len(self) -> int:
        """Longest prompt the executor accepts (its own rule, see `longest_prompt`)."""
        build = self._build_config()
        limits = self.runtime_limits or clip_runtime_limits(
            build, max_batch_size=self._max_batch_size, max_num_tokens=self._max_num_tokens
        )
        return longest_prompt(build, limits, chunked_context=self._chunked_context_on(build))

    @property
    def vocab_size(self) -> int:
        """Width of the engine's logits (pretrained_config.vocab_size, padding included)."""
        return self._build_config().vocab_size

    def _chunked_context_on(self, build: EngineBuildConfig) -> bool:
        # The executor turns chunked context off without paged context FMHA (executorImpl.cpp,
        # fixExecutorConfig L68-86 at b35ac1b6); so does `_executor_config`.
        return self._chunked_context and build.paged_context_fmha

    def _build_config(self) -> EngineBuildConfig:
        if self._build is None:
            if self.engine_dir is None:
                raise EngineUnavailableError(
                    f"{self.model_id}: the engine is chosen under {self.engines_root} at start()"
                )
            self._build = EngineBuildConfig.read(self.engine_dir)
        return self._build

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._executor is not None:
            return
        self._loop = asyncio.get_running_loop()
        # Importing tensorrt_llm and deserialising an engine take seconds to minutes.
        await asyncio.to_thread(self._load)
        self._stop.clear()
        self._accepting = True
        self._awaiter = threading.Thread(
            target=self._await_loop, name=f"trtllm-awaiter-{self.model_id}", daemon=True
        )
        self._awaiter.start()

    def _load(self) -> None:
        trtllm = _import_bindings()
        runtime = self._runtime or detect_runtime()
        if runtime.gpu is None:
            raise EngineUnavailableError(
                f"{self.model_id}: no NVIDIA GPU is visible (nvidia-smi found none). "
                + INSTALL_HINT
            )
        version = runtime.tensorrt_llm_version
        if version is not None and not version.startswith("1.2."):
            log.warning(
                "TensorRT-LLM %s is installed; this adapter is written for %s (later releases "
                "removed compiled engines)",
                version,
                PINNED_TENSORRT_LLM_VERSION,
            )
        engine_dir = self._pick_engine(runtime)
        build = EngineBuildConfig.read(engine_dir)
        limits = clip_runtime_limits(
            build, max_batch_size=self._max_batch_size, max_num_tokens=self._max_num_tokens
        )
        defaults = GenerationDefaults.read(self.tokenizer_dir)
        config = self._executor_config(trtllm, build, limits, defaults)
        try:
            executor = trtllm.Executor(engine_dir, trtllm.ModelType.DECODER_ONLY, config)
        except Exception as exc:
            raise EngineUnavailableError(
                f"TensorRT-LLM could not load engine {engine_dir}: {exc}"
            ) from exc
        log.info(
            "loaded %s from %s: max_batch_size=%d max_num_tokens=%d longest prompt=%d "
            "max_seq_len=%d kv_fraction=%.2f block_reuse=%s chunked_context=%s",
            self.model_id,
            engine_dir,
            limits.max_batch_size,
            limits.max_num_tokens,
            longest_prompt(build, limits, chunked_context=config.enable_chunked_context),
            build.max_seq_len,
            self._kv_fraction,
            config.kv_cache_config.enable_block_reuse,
            config.enable_chunked_context,
        )
        self.engine_dir = engine_dir
        self._trtllm = trtllm
        self._build = build
        self.runtime_limits = limits
        self._defaults = defaults
        self._executor = executor

    def _pick_engine(self, runtime: RuntimeInfo) -> Path:
        if self.engine_dir is not None:
            check_engine(
                self.engine_dir,
                model_id=self.model_id,
                runtime=runtime,
                checkpoint_dir=self.tokenizer_dir,
            )
            return self.engine_dir
        assert self.engines_root is not None
        return select_engine(
            self.engines_root,
            model_id=self.model_id,
            runtime=runtime,
            checkpoint_dir=self.tokenizer_dir,
        )

    def _executor_config(
        self,
        trtllm: ModuleType,
        build: EngineBuildConfig,
        limits: RuntimeLimits,
        defaults: GenerationDefaults,
    ) -> Any:
        # Block reuse is off without paged context FMHA and for an engine that gathers context
        # logits, as the executor would turn it off itself, each with a warning of its own
        # (batch_manager/trtGptModelInflightBatching.cpp, fixExecutorConfig L141-168 at
        # b35ac1b6): said here so that the start-up line below tells what runs.
        reuse, chunked = self._block_reuse, self._chunked_context_on(build)
        if not build.paged_context_fmha and (reuse or self._chunked_context):
            log.warning(
                "engine was built without --use_paged_context_fmha: KV block reuse and chunked "
                "context are off"
            )
            reuse = False
        if build.gather_context_logits and reuse:  # fixExecutorConfig L156-161
            log.warning(
                "engine was built with --gather_context_logits: KV block reuse is off (context "
                "logits cannot be returned for reused tokens)"
            )
            reuse = False
        policy = getattr(trtllm.CapacitySchedulerPolicy, SCHEDULER_POLICIES[self._scheduler_policy])
        return trtllm.ExecutorConfig(
            max_beam_width=1,
            scheduler_config=trtllm.SchedulerConfig(capacity_scheduler_policy=policy),
            kv_cache_config=trtllm.KvCacheConfig(
                enable_block_reuse=reuse, free_gpu_memory_fraction=self._kv_fraction
            ),
            enable_chunked_context=chunked,
            max_batch_size=limits.max_batch_size,
            max_num_tokens=limits.max_num_tokens,
            # The default (True) renormalises log probs over the top-k/top-p set, so greedy reads
            # 0.0; False gives log p over the whole vocabulary (samplingTopKKernels.cu,
            # topKStage2Sampling L240-253 at 03961722). See docs/gpu.md "What each engine
            # returns".
            normalize_log_probs=False,
            # Needed for top_logprobs and enough without the build flag
            # (trtGptModelInflightBatching.h, getGatherGenerationLogits L356-359 at 83ab45a5 ORs
            # the two). Every request pays for it on the GPU: RuntimeBuffers::create allocates
            # a ring of GenerationLogitsCache::kCACHE_LENGTH = 8 steps of logits, [8,
            # max_batch_size x beam, vocab_padded] x logits dtype, before the KV cache is sized
            # from what is left, and every step's logits are written into it
            # (runtimeBuffers.cpp, create and reshape; trtGptModelInflightBatching.cpp,
            # constructor (mGatherGenerationLogits L188 at b35ac1b6) and createBuffers). Only
            # asking requests get a host buffer and copies (executorImpl.cpp fetchNewRequests,
            # handleGenerationLogits.cpp). So it is a per-model option; docs/gpu.md has the cost.
            gather_generation_logits=self._top_logprobs,
            guided_decoding_config=(
                guided_decoding_config(
                    trtllm, self._tokenizer, defaults.order(self._tokenizer.eos_token_ids)
                )
                if self._tokenizer is not None
                else None
            ),
        )

    async def shutdown(self) -> None:
        executor = self._executor
        if executor is None:
            return
        self._accepting = False
        for stream in list(self._streams.values()):
            self._cancel_executor_request(stream)
        # Let the executor confirm the cancellations so readers get its CANCELLED finals.
        if self._streams:
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), _SHUTDOWN_DRAIN_S)
            except TimeoutError:
                log.warning(
                    "%d requests did not end within %.1fs", len(self._streams), _SHUTDOWN_DRAIN_S
                )
        self._stop.set()
        if self._awaiter is not None:
            await asyncio.to_thread(self._awaiter.join)
            self._awaiter = None
        await asyncio.to_thread(executor.shutdown)
        self._executor = None
        for stream in list(self._streams.values()):
            ends = [
                end
                for index in range(len(stream.converter.choices))
                if (end := stream.converter.end_choice(index)) is not None
            ]
            if ends:
                stream.channel.put(ends)
            self._retire(stream)

    # -- requests -------------------------------------------------------------------------------

    async def generate(self, request: EngineRequest) -> AsyncIterator[list[SequenceOutput]]:
        stream = self._submit(request)
        try:
            async for outputs in stream.channel:
                yield outputs
        finally:
            # Reader gone early (closed iterator, cancelled task): free the executor slot.
            self._retire(stream)

    def _submit(self, request: EngineRequest) -> _Stream:
        if not self._accepting or self._executor is None or self._trtllm is None:
            raise RuntimeError(f"{self.model_id}: the trtllm engine is not running")
        assert self._build is not None
        if request.params.top_logprobs and not self._top_logprobs:
            raise EngineRequestError(
                f"{self.model_id} does not serve top_logprobs: its generation logits are off "
                "(the model option `top_logprobs: true` turns them on, at a GPU memory cost "
                "for every request; see docs/gpu.md)",
                param="top_logprobs",
            )
        if self._build.logits_dtype not in BIASABLE_LOGITS_DTYPES:
            # The executor would fail every active request, not just this one (config.py).
            field = "constraint" if request.constraint is not None else None
            field = field or ("logit_bias" if request.params.logit_bias else None)
            if field is not None:
                raise EngineRequestError(
                    f"{self.model_id} does not serve {field}: its engine's logits are "
                    f"{self._build.logits_dtype}, and TensorRT-LLM biases and masks only "
                    "float32 or float16 logits",
                    param=field,
                )
        if request.constraint is not None and self._tokenizer is None:
            raise EngineRequestError(
                f"{self.model_id}: constrained output needs the engine started with a tokenizer",
                param="constraint",
            )
        stops = plan_stops(request, self._defaults)
        try:
            trt_request = build_request(self._trtllm, request, build=self._build, stops=stops)
        except EngineRequestError:
            raise
        except (RuntimeError, TypeError, ValueError) as exc:
            # The bindings' constructors check the values (TLLM_CHECK -> RuntimeError).
            raise EngineRequestError(f"TensorRT-LLM rejected the request: {exc}") from exc
        executor_id = self._executor.enqueue_request(trt_request)
        converter = ResultConverter(
            request,
            stops,
            tokens_per_block=self._build.tokens_per_block,
            vocab_size=self._build.vocab_size,
        )
        stream = _Stream(
            request=request,
            converter=converter,
            executor_id=executor_id,
            channel=OutputChannel(len(converter.choices), request.pace),
        )
        self._streams[executor_id] = stream
        self._by_request_id[request.request_id] = stream
        return stream

    def finish_choice(self, request_id: str, index: int) -> None:
        stream = self._by_request_id.get(request_id)
        if stream is None or not 0 <= index < len(stream.converter.choices):
            return
        end = stream.converter.end_choice(index)
        if end is None:
            return
        stream.channel.put([end])
        if stream.converter.all_finished:
            self._retire(stream)
        else:
            # The executor has no per-sequence cancel: the choice keeps its batch slot until
            # the whole request ends, and its outputs are dropped meanwhile.
            log.debug(
                "request %s: choice %d ended; TensorRT-LLM cannot cancel one of n=%d sequences, "
                "so its outputs are dropped until the request finishes",
                request_id,
                index,
                len(stream.converter.choices),
            )

    def _retire(self, stream: _Stream) -> None:
        """Forget a stream; cancel its executor request if the executor still runs it."""
        if stream.retired:
            return
        stream.retired = True
        self._streams.pop(stream.executor_id, None)
        if self._by_request_id.get(stream.request.request_id) is stream:
            del self._by_request_id[stream.request.request_id]
        if not self._streams:
            self._drained.set()
        self._cancel_executor_request(stream)

    def _cancel_executor_request(self, stream: _Stream) -> None:
        if stream.executor_done or self._executor is None:
            return
        try:
            self._executor.cancel_request(stream.executor_id)
        except RuntimeError as exc:  # shutting down underneath us
            log.debug("cancel_request(%d) failed: %s", stream.executor_id, exc)

    # -- the awaiter thread and the dispatch on the event loop ----------------------------------

    def _await_loop(self) -> None:
        executor, loop = self._executor, self._loop
        assert executor is not None and loop is not None
        while not self._stop.is_set():
            try:
                responses = executor.await_responses(timeout=self._await_timeout)
            except Exception as exc:
                if self._stop.is_set():
                    break
                log.exception("TensorRT-LLM await_responses failed")
                error = TrtllmEngineError(f"TensorRT-LLM executor failed: {exc}")
                if not _call_soon(loop, self._fail_all, error):
                    break
                self._stop.wait(0.5)
                continue
            if responses and not _call_soon(loop, self._dispatch, responses):
                break

    def _dispatch(self, responses: list[Any]) -> None:
        touched: dict[int, _Stream] = {}
        for response in responses:
            stream = self._streams.get(response.request_id)
            if stream is None:
                continue  # cancelled or closed meanwhile
            if response.has_error():
                stream.executor_done = True
                stream.channel.fail(_response_error(response.error_msg))
                self._retire(stream)
                continue
            result = response.result
            stream.request.timings.mark_scheduled(first_scheduled_at(result))
            if result.is_final:
                stream.executor_done = True
            output = stream.converter.convert(result)
            if output is not None:
                self._generated_tokens += len(output.token_ids)
                stream.channel.put([output])
                touched[stream.executor_id] = stream
        for stream in touched.values():
            if stream.converter.all_finished:
                self._retire(stream)

    def _fail_all(self, error: BaseException) -> None:
        for stream in list(self._streams.values()):
            stream.channel.fail(error)
            self._retire(stream)

    # -- metrics ----------------------------------------------------------------------------------

    def prompt_logprobs_refusal(self) -> str | None:
        # TensorRT-LLM 1.2.x returns a prompt's logits only from an engine built with
        # --gather_context_logits (cpp/tensorrt_llm/executor/executorImpl.cpp, fetchNewRequests:
        # "Return context logit need to build engine with gather_context_logits", read at
        # commit b35ac1b6), and such an engine runs without KV-cache block reuse
        # (batch_manager/trtGptModelInflightBatching.cpp, executorConfigIsValid L122-139 /
        # fixExecutorConfig L141-168, context logits L156-161: "Context logits cannot be
        # returned for reused tokens", same commit). The build targets do not ask for it, and
        # this adapter does not yet turn Result.context_logits into prompt logprobs: refused
        # here rather than served wrong.
        return (
            "the TensorRT-LLM engine does not return prompt log probabilities (that needs an "
            "engine built with --gather_context_logits, which also turns KV-cache reuse off); "
            "use echo without logprobs, or a torch-engine model"
        )

    # What inference.engine_watch reads. TensorRT-LLM facts behind them (results.py; llmRequest.cpp
    # `LlmRequest::createResult` at 119c6e60, not checked at tag v1.2.1): each streaming Result
    # holds only its new tokens (L113-120), so the counter moves with every token generated, not
    # while a long prompt's context (prefill) chunks run; with n > 1 each sequence sends its own
    # final Result (L83-89), and `_dispatch` retires a stream once every choice has had its final
    # one, so a request the executor has finished is not held, read by its client or not.
    # A request queued in the executor (no KV-cache room yet) is held: it owes tokens.
    @property
    def generated_tokens(self) -> int:
        return self._generated_tokens

    @property
    def requests_held(self) -> int:
        return len(self._streams)

    def stats(self) -> EngineStats:
        executor = self._executor
        if executor is None:
            return EngineStats(generated_tokens=self._generated_tokens)
        try:
            latest = executor.get_latest_iteration_stats()  # drains the executor's queue
        except RuntimeError:
            latest = []
        if latest:
            self._last_iteration = latest[-1]
        # Requests in flight are counted here, exactly; the executor's own counters lag by an
        # iteration and stay at their last value while it idles.
        in_flight = len(self._streams)
        last = self._last_iteration
        queued = min(in_flight, int(last.num_queued_requests)) if last is not None else 0
        kv = last.kv_cache_stats if last is not None else None
        usage = hit_rate = 0.0
        if kv is not None:
            if in_flight and kv.max_num_blocks:
                usage = kv.used_num_blocks / kv.max_num_blocks
            looked_up = kv.reused_blocks + kv.missed_blocks
            hit_rate = kv.reused_blocks / looked_up if looked_up else 0.0
        return EngineStats(
            active_requests=in_flight - queued,
            queued_requests=queued,
            kv_cache_usage=usage,
            kv_cache_hit_rate=hit_rate,
            generated_tokens=self._generated_tokens,
        )


def _import_bindings() -> ModuleType:
    try:
        return importlib.import_module("tensorrt_llm.bindings.executor")
    except (ImportError, OSError) as exc:
        # OSError: the wheel is there but libcuda / libnvinfer are not (no GPU runtime).
        raise EngineUnavailableError(
            f"TensorRT-LLM cannot be imported ({exc}). {INSTALL_HINT}"
        ) from exc


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> bool:
    """Schedule on the loop from the awaiter thread; False once the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


def _response_error(message: str) -> Exception:
    if any(marker in message for marker in _REQUEST_ERROR_MARKERS):
        return EngineRequestError(_client_message(message))
    return TrtllmEngineError(f"TensorRT-LLM failed the request: {message}")


# fetchNewRequests answers "Encountered an error when fetching new request: " + e.what()
# (executorImpl.cpp L1653-1662, the prefix L1658, at b35ac1b6), and a TllmException's what() is
# "<message> (<source file>:<line>)\n<backtrace>" (common/tllmException.cpp L38-44, the format
# L43, at 015884d6; TLLM_CHECK messages also start "[TensorRT-LLM][ERROR] Assertion failed: ",
# tllmException.h throwRuntimeError L78-86 at 0c6a62a1); the client gets <message>.
_FETCH_PREFIX = "Encountered an error when fetching new request: "
_ASSERT_PREFIX = "[TensorRT-LLM][ERROR] Assertion failed: "
_SOURCE_SUFFIX = re.compile(r" \([^()\s]+:\d+\)$")


def _client_message(message: str) -> str:
    first = message.split("\n", 1)[0].removeprefix(_FETCH_PREFIX).removeprefix(_ASSERT_PREFIX)
    return _SOURCE_SUFFIX.sub("", first)
