"""The engine interface: token ids in, per-choice token ids (and logprobs) out, batched inside."""

from __future__ import annotations

import asyncio
import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from inference.sampling import SamplingParams


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


@dataclass(slots=True)
class GenerationRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    # Token ids that end a sequence with EngineFinish.EOS (from the tokenizer and
    # generation_config.json), unless params.ignore_eos.
    eos_token_ids: frozenset[int] = field(default_factory=frozenset)
    # time.monotonic() after which unfinished choices end with EngineFinish.TIME_LIMIT.
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class EngineStats:
    active_requests: int = 0
    queued_requests: int = 0
    kv_cache_usage: float = 0.0
    kv_cache_hit_rate: float = 0.0


class Engine(ABC):
    """A batched token generator for one model.

    Contract every implementation keeps (the shared engine tests check it):
    - `generate` yields lists of `SequenceOutput` until every choice (0 .. n-1) has
      yielded exactly one output with `finish` set, then returns. Each time the caller
      resumes it, it yields everything produced since (`take_unread` does this for engines
      that queue per step), so a caller that lags gets fewer, larger lists: this is how the
      stream coalesces tokens only when the reader lags.
    - Closing the iterator early (the caller stops reading, or its task is cancelled)
      cancels the request: it leaves the batch at the next step and `stats()` no longer
      counts it.
    - A choice ended by an end-of-sequence token does not output that token (TensorRT-LLM
      never reports it); one ended by a stop token id outputs it, with `stop_token_id` set.
    - `finish_choice` ends one choice early (a stop string matched in the servicer); its
      final output has finish CANCELLED and the caller ignores that reason.
    - Errors about the request itself raise `EngineRequestError` (mapped to
      INVALID_ARGUMENT); anything else is an engine fault.
    """

    name: str = "engine"

    async def start(self) -> None:  # noqa: B027  (optional hook: engines may need no setup)
        """Load weights / start worker threads. Called once before `generate`."""

    async def shutdown(self) -> None:  # noqa: B027  (optional hook)
        """Stop accepting work, cancel what is running and release resources."""

    @abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[list[SequenceOutput]]:
        """Run one request; see the class docstring for the contract."""

    @abstractmethod
    def finish_choice(self, request_id: str, index: int) -> None:
        """End choice `index` of a running request at the next step."""

    @abstractmethod
    def stats(self) -> EngineStats:
        """Current load; cheap enough to call on every metrics scrape."""


async def take_unread(
    queue: asyncio.Queue[list[SequenceOutput] | BaseException],
) -> list[SequenceOutput]:
    """Waits for the next item, then takes every item already queued behind it as one list.

    Raises the first exception found among them (the engine failed the request).
    """
    items = [await queue.get()]
    while not queue.empty():
        items.append(queue.get_nowait())
    if len(items) == 1 and not isinstance(items[0], BaseException):
        return items[0]
    outputs: list[SequenceOutput] = []
    for item in items:
        if isinstance(item, BaseException):
            raise item
        outputs.extend(item)
    return outputs


class EngineRequestError(ValueError):
    """The engine refused a request because of the request itself (e.g. prompt too long)."""


class EngineUnavailableError(RuntimeError):
    """The engine cannot run here (missing TensorRT-LLM, no GPU, mismatched engine)."""
