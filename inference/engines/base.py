"""The engine interface: token ids in, per-choice token ids (and logprobs) out, batched inside."""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from inference.sampling import SamplingParams

if TYPE_CHECKING:
    from inference.grammar import CompiledConstraint


class EngineFinish(enum.Enum):
    """Why a sequence ended, as far as the engine knows (stop *strings* are the servicer's)."""

    EOS = "eos"
    LENGTH = "length"
    STOP_TOKEN = "stop_token"
    CANCELLED = "cancelled"
    TIME_LIMIT = "time_limit"


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token_id: int
    logprob: float
    # Most likely alternatives at this position, best first (empty unless top_logprobs > 0).
    top: tuple[tuple[int, float], ...] = ()


@dataclass(slots=True)
class SequenceOutput:
    """New tokens of one choice since its previous output."""

    index: int
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish: EngineFinish | None = None
    # The stop token id that ended the sequence, when finish is STOP_TOKEN.
    stop_token_id: int | None = None
    # Prompt tokens served from a prefix cache (reported once, on the finishing output).
    cached_tokens: int = 0
    # With params.prompt_logprobs, on the choice's first output only: the log probability of
    # each prompt token after the first, given the tokens before it (the first has nothing
    # before it), with params.top_logprobs alternatives; the model's raw distribution.
    prompt_logprobs: list[TokenLogprob] | None = None


def unpaced() -> float:
    """The default pacing: outputs are handed over as soon as they exist."""
    return 0.0


@dataclass(slots=True)
class RequestTimings:
    """When a request reached each phase, in `time.monotonic()` seconds (None: not yet).

    `arrived` is set when the request is built. Engines set `scheduled` when it first enters
    their batch (the end of its queueing; TensorRT-LLM reports its own time); the runner sets
    the token times as outputs reach it. Queue = arrived -> scheduled, prefill = scheduled ->
    first_token, decode = first_token -> last_token: vLLM's phases (inference/metrics.py).
    """

    arrived: float = field(default_factory=time.monotonic)
    scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None

    def mark_scheduled(self, at: float) -> None:
        """The first time only: a preempted and rescheduled request keeps its first."""
        if self.scheduled is None:
            self.scheduled = at


@dataclass(slots=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    # Token ids that end a sequence with EngineFinish.EOS (from the tokenizer and
    # generation_config.json), unless params.ignore_eos.
    eos_token_ids: frozenset[int] = field(default_factory=frozenset)
    # time.monotonic() after which unfinished choices end with EngineFinish.TIME_LIMIT.
    deadline: float | None = None
    # The reader's pacing, asked before each hand-over: the least seconds since the previous
    # one (0: as soon as there is output). Finishing outputs are never held (OutputChannel).
    pace: Callable[[], float] = field(default=unpaced, compare=False, repr=False)
    # The grammar every choice's output must follow (each choice gets its own matcher). A
    # constrained choice never emits a token the grammar forbids, and ends with EOS only where
    # the grammar may end.
    constraint: CompiledConstraint | None = field(default=None, compare=False)
    timings: RequestTimings = field(default_factory=RequestTimings, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class EngineStats:
    active_requests: int = 0
    queued_requests: int = 0
    kv_cache_usage: float = 0.0
    kv_cache_hit_rate: float = 0.0
    # Output tokens generated since the engine started (a counter).
    generated_tokens: int = 0


class Engine(ABC):
    """A batched token generator for one model.

    Contract every implementation keeps (the shared engine tests check it):
    - `generate` yields lists of `SequenceOutput` until every choice (0 .. n-1) has
      yielded exactly one output with `finish` set, then returns. Each time the caller
      resumes it, it yields everything produced since, one output per choice, so a caller
      that lags gets fewer, larger outputs: this is how the stream coalesces tokens only
      when the reader lags. Outputs wait for `request.pace()` to pass since the previous
      yield, except finishing ones. `OutputChannel` does all of this.
    - Closing the iterator early (the caller stops reading, or its task is cancelled)
      cancels the request: it leaves the batch at the next step and `stats()` no longer
      counts it.
    - A choice ended by an end-of-sequence token does not output that token (TensorRT-LLM
      never reports it); one ended by a stop token id outputs it, with `stop_token_id` set.
    - `finish_choice` ends one choice early (a stop string matched in the servicer); its
      final output has finish CANCELLED and the caller ignores that reason.
    - A request with a `constraint` gets only tokens its grammar allows, in every choice.
    - Errors about the request itself raise `EngineRequestError` (mapped to
      INVALID_ARGUMENT); anything else is an engine fault.
    """

    name: str = "engine"
    # Whether the engine enforces `EngineRequest.constraint` (the service refuses constrained
    # requests for engines that do not).
    constrains_output: bool = True

    async def start(self) -> None:  # noqa: B027  (optional hook: engines may need no setup)
        """Load weights / start worker threads. Called once before `generate`."""

    async def shutdown(self) -> None:  # noqa: B027  (optional hook)
        """Stop accepting work, cancel what is running and release resources."""

    @abstractmethod
    def generate(self, request: EngineRequest) -> AsyncIterator[list[SequenceOutput]]:
        """Run one request; see the class docstring for the contract."""

    @abstractmethod
    def finish_choice(self, request_id: str, index: int) -> None:
        """End choice `index` of a running request at the next step."""

    @abstractmethod
    def stats(self) -> EngineStats:
        """Current load; cheap enough to call on every metrics scrape."""

    @property
    def generated_tokens(self) -> int:
        """`stats().generated_tokens` alone, for callers that want only that counter (whether
        the engine is working: inference.generate_many); engines whose `stats()` does more
        work return their counter directly."""
        return self.stats().generated_tokens

    @property
    def requests_held(self) -> int:
        """Requests the engine is working on or has queued (not those it finished whose
        outputs a slow reader has yet to take): whether it owes tokens
        (inference.engine_watch). Engines whose `stats()` does more work count directly."""
        stats = self.stats()
        return stats.active_requests + stats.queued_requests

    def prompt_logprobs_refusal(self) -> str | None:
        """Why this engine cannot honour `params.prompt_logprobs`; None when it can."""
        return None


class EngineRequestError(ValueError):
    """The engine refused a request because of the request itself (e.g. prompt too long).

    `param` names the request field at fault (INVALID_ARGUMENT names it to the client); the
    prompt ("messages") unless said otherwise.
    """

    def __init__(self, message: str, *, param: str = "messages") -> None:
        super().__init__(message)
        self.param = param


class EngineUnavailableError(RuntimeError):
    """The engine cannot run here (missing TensorRT-LLM, no GPU, mismatched engine)."""
