"""A benchmark-only engine that emits token ids on a clock and does no compute.

It measures the stack around an engine (servicer, gRPC, facade, SSE): every choice emits
`tokens_per_second` tokens, so whatever the stack does not carry shows up as lag at the
client. A model uses it only when its config says `engine: synthetic`.

Cost: one timer task ticks every `tick_ms` and emits for every choice that is due (a heap
ordered by due time); no task, sleep or future per token.

With `max_batch_size`, at most that many choices run at once and later requests wait their
turn in order, and none jumps the line: what a full engine does to the stack, its queueing
and its watchdogs, can be measured. TensorRT-LLM's default capacity policy does the same
(cpp/tensorrt_llm/batch_manager/capacityScheduler.cpp, `GuaranteedNoEvictScheduler::impl`,
L356-L444 at the code index's commit 02a10fe, lines counted by hand, not checked at tag
v1.2.1): it walks the active requests in order, schedules those in progress, then the
pending ones while `scheduledRequests.size() < mMaxNumRequests` (L367, L416), and stops at
the first that lacks KV-cache blocks (L441-L444), so the rest wait. It counts requests and
blocks where this counts choices (as the torch engine's `max_batch_size` does); only the
queueing is modelled, not its measure.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from inference.engines.base import (
    Engine,
    EngineFinish,
    EngineRequest,
    EngineRequestError,
    EngineStats,
    EngineUnavailableError,
    SequenceOutput,
    TokenLogprob,
)
from inference.engines.channel import OutputChannel

# Fake log probabilities: the chosen token gets p = 1/2, the r-th alternative 1/2**(r+1),
# so a choice's top list is ordered, distinct and sums to less than 1 like real ones.
_LOG_HALF = math.log(0.5)


@dataclass(slots=True, eq=False)
class _Choice:
    """One choice's position in the token schedule."""

    request: _Request
    index: int
    # Offset into the vocabulary cycle, so choices of one request differ.
    offset: int
    emitted: int = 0
    done: bool = False


@dataclass(slots=True, eq=False)
class _Request:
    """A running request: its choices and its unread outputs."""

    request: EngineRequest
    start: float
    # Tokens per choice, and how a choice that reaches it ends: LENGTH at max_tokens, or EOS
    # where the fake model "ends its answer" (output_tokens) first.
    limit: int
    limit_finish: EngineFinish
    # Token ids that end a choice when sampled: EOS ids (unless ignore_eos) and stop ids.
    stoppers: frozenset[int]
    # Unread output, merged per choice while the reader lags or is paced.
    channel: OutputChannel
    choices: list[_Choice] = field(default_factory=list)
    # Choices whose finish was requested by `finish_choice`, applied at the next tick.
    to_finish: set[int] = field(default_factory=set)
    unfinished: int = 0
    closed: bool = False
    running: bool = False  # its choices hold batch room (False while it waits its turn)


class SyntheticEngine(Engine):
    """Emits token ids cycling over `vocab_ids` at `tokens_per_second` per choice.

    - A choice ends with LENGTH at `max_tokens`. With `output_tokens` set and smaller, the
      fake model "answers" in `output_tokens` tokens and the choice ends with EOS there,
      unless the request sets `ignore_eos` (benchmarks do, to fix the output length).
    - Token ids in the request's EOS set (unless `ignore_eos`) or stop-token set end the
      choice (EOS / STOP_TOKEN) once `min_tokens` were generated; a stop token is output,
      an EOS token is not (the rule of every engine, see `base.Engine`).
    - Deadlines end unfinished choices with TIME_LIMIT; `finish_choice` and closing the
      iterator take effect at the next tick.
    - The first token is due at once (on the next tick), token k at `start + k / rate`;
      a late tick emits every token that came due meanwhile, in one output. `start` is when
      the request got batch room (`max_batch_size` choices at once; None: no limit).
    - It cannot follow a grammar (its tokens are a fixed cycle), so a constrained request is
      refused: the service checks `constrains_output` first.
    """

    name = "synthetic"
    constrains_output = False

    def __init__(
        self,
        *,
        vocab_ids: Sequence[int],
        tokens_per_second: float = 120.0,
        output_tokens: int | None = None,
        tick_ms: float = 5.0,
        max_batch_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The token schedule's clock, the one `EngineRequest.deadline` is on; a test on a
        # virtual-time loop passes `loop.time`, so that the ticker's sleeps agree with it.
        ids = tuple(int(i) for i in vocab_ids)
        if not ids:
            raise ValueError("vocab_ids must name at least one token id")
        if any(i < 0 for i in ids):
            raise ValueError("vocab_ids must be non-negative token ids")
        if not tokens_per_second > 0:
            raise ValueError(f"tokens_per_second must be > 0, got {tokens_per_second}")
        if output_tokens is not None and output_tokens < 1:
            raise ValueError(f"output_tokens must be >= 1 when set, got {output_tokens}")
        if not tick_ms > 0:
            raise ValueError(f"tick_ms must be > 0, got {tick_ms}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 when set, got {max_batch_size}")
        self._vocab = ids
        self._rate = float(tokens_per_second)
        self._output_tokens = output_tokens
        self._tick = tick_ms / 1000.0
        self._clock = clock
        self._requests: dict[str, _Request] = {}
        self._max_batch_size = max_batch_size
        self._batch_choices = 0  # choices of running requests, against max_batch_size
        self._waiting: collections.deque[_Request] = collections.deque()  # in arrival order
        # (due time, tie-breaker, choice): the next token of each live choice.
        self._heap: list[tuple[float, int, _Choice]] = []
        # (deadline, tie-breaker, request) for requests with a deadline.
        self._deadlines: list[tuple[float, int, _Request]] = []
        self._seq = itertools.count()
        self._finish_requested: set[_Request] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False
        # Tokens emitted since construction; benchmarks compare it with what clients got.
        self._generated_tokens = 0

    @property
    def tokens_per_second(self) -> float:
        return self._rate

    async def start(self) -> None:
        self._closed = False

    async def shutdown(self) -> None:
        self._closed = True
        now = self._clock()
        for req in list(self._requests.values()):
            for choice in req.choices:
                if not choice.done:
                    self._finish(choice, EngineFinish.CANCELLED, now)
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def stats(self) -> EngineStats:
        # `_requests` holds the unfinished ones; those without batch room wait.
        waiting = sum(1 for req in self._requests.values() if not req.running)
        return EngineStats(
            active_requests=len(self._requests) - waiting,
            queued_requests=waiting,
            generated_tokens=self._generated_tokens,
        )

    @property
    def generated_tokens(self) -> int:
        return self._generated_tokens

    def finish_choice(self, request_id: str, index: int) -> None:
        req = self._requests.get(request_id)
        # An unknown id or index is a race with the request finishing on its own: ignore it.
        if req is not None and 0 <= index < len(req.choices):
            req.to_finish.add(index)
            self._finish_requested.add(req)

    def generate(self, request: EngineRequest) -> AsyncIterator[list[SequenceOutput]]:
        # Register synchronously so that `finish_choice` and `stats` see the request as soon
        # as `generate` returns, before the caller first awaits the iterator.
        if self._closed:
            raise EngineUnavailableError("the synthetic engine is shut down")
        if request.request_id in self._requests:
            raise EngineRequestError(f"request id {request.request_id!r} is already running")
        if request.constraint is not None:
            raise EngineRequestError("the synthetic engine cannot follow a grammar")
        if self._max_batch_size is not None and request.params.n > self._max_batch_size:
            raise EngineRequestError(
                f"n must lie in [1, {self._max_batch_size}] on this engine", param="n"
            )
        req = self._register(request)
        return self._stream(req)

    def _register(self, request: EngineRequest) -> _Request:
        params = request.params
        now = self._clock()
        limit, limit_finish = params.max_tokens, EngineFinish.LENGTH
        if self._output_tokens is not None and not params.ignore_eos:
            # Like EOS, the fake model's own end is suppressed until min_tokens.
            natural = max(self._output_tokens, params.min_tokens)
            if natural < limit:
                limit, limit_finish = natural, EngineFinish.EOS
        stoppers = params.stop_token_ids
        if not params.ignore_eos:
            stoppers = stoppers | request.eos_token_ids
        n = max(1, params.n)
        req = _Request(
            request=request,
            start=now,
            limit=limit,
            limit_finish=limit_finish,
            stoppers=stoppers,
            channel=OutputChannel(n, request.pace),
        )
        req.unfinished = n
        stride = max(1, len(self._vocab) // n)
        for index in range(n):
            req.choices.append(_Choice(req, index, offset=(index * stride) % len(self._vocab)))
        self._requests[request.request_id] = req
        self._waiting.append(req)
        self._admit_waiting(now)
        if request.deadline is not None:
            heapq.heappush(self._deadlines, (request.deadline, next(self._seq), req))
        self._ensure_ticker()
        return req

    def _admit_waiting(self, now: float) -> None:
        """Runs waiting requests, first come first served, while the batch has room."""
        waiting = self._waiting
        while waiting and not self._closed:
            req = waiting[0]
            if req.closed or not req.unfinished:  # cancelled or timed out while it waited
                waiting.popleft()
                continue
            n = len(req.choices)
            cap = self._max_batch_size
            if cap is not None and self._batch_choices + n > cap:
                return
            waiting.popleft()
            self._batch_choices += n
            req.running = True
            req.start = now
            req.request.timings.mark_scheduled(now)
            for choice in req.choices:
                heapq.heappush(self._heap, (now, next(self._seq), choice))

    def _leave_batch(self, req: _Request, now: float) -> None:
        """`req` ended or was closed: its room goes to those waiting."""
        if req.running:
            req.running = False
            self._batch_choices -= len(req.choices)
            self._admit_waiting(now)

    async def _stream(self, req: _Request) -> AsyncIterator[list[SequenceOutput]]:
        try:
            async for outputs in req.channel:
                yield outputs
        finally:
            self._unregister(req)

    def _unregister(self, req: _Request) -> None:
        # Choices left in the heaps are skipped lazily when popped (req.closed), and so is
        # a closed request in the waiting line.
        req.closed = True
        if self._requests.get(req.request.request_id) is req:
            del self._requests[req.request.request_id]
        self._leave_batch(req, self._clock())

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(
                self._run_ticker(), name="synthetic-engine-ticker"
            )

    async def _run_ticker(self) -> None:
        # Ticks on an absolute schedule so sleep overshoot does not accumulate; it stops when
        # no request is left and `_register` restarts it.
        next_tick = self._clock()
        while self._requests:
            now = self._clock()
            self._step(now)
            next_tick = max(next_tick + self._tick, now)
            await asyncio.sleep(max(0.0, next_tick - self._clock()))

    def _step(self, now: float) -> None:
        """Emit every due token, apply requested finishes and deadlines (via the channels)."""
        requested, self._finish_requested = self._finish_requested, set()
        for req in requested:
            for index in sorted(req.to_finish):
                choice = req.choices[index]
                if not choice.done and not req.closed:
                    self._finish(choice, EngineFinish.CANCELLED, now)
            req.to_finish.clear()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, req = heapq.heappop(self._deadlines)
            if req.closed:
                continue
            for choice in req.choices:
                if not choice.done:
                    self._finish(choice, EngineFinish.TIME_LIMIT, now)
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, choice = heapq.heappop(heap)
            req = choice.request
            if choice.done or req.closed:
                continue
            self._emit(choice, now)
            if not choice.done:
                due = req.start + choice.emitted / self._rate
                heapq.heappush(heap, (due, next(self._seq), choice))

    def _emit(self, choice: _Choice, now: float) -> None:
        """Put the tokens of `choice` due by `now` into its request's channel; finish if due."""
        req = choice.request
        limit = req.limit
        emitted = choice.emitted
        if emitted >= limit:  # only when max_tokens is 0
            self._finish(choice, req.limit_finish, now)
            return
        # The heap popped this choice, so token `emitted` is due: at least one token goes out.
        # The floor alone can come out one short when `now` is within rounding of a token's
        # time, and a choice that emits nothing would be pushed back at that same time and
        # popped again forever (the event loop spinning at 100% CPU).
        due = min(limit, max(emitted + 1, int((now - req.start) * self._rate) + 1))
        vocab = self._vocab
        size = len(vocab)
        first = choice.offset + emitted
        if due - emitted == 1:  # the common case: a tick shorter than a token's interval
            ids = [vocab[first % size]]
        else:
            ids = [vocab[(first + k) % size] for k in range(due - emitted)]
        params = req.request.params
        stopper: int | None = None
        if req.stoppers:
            for k, token in enumerate(ids):
                if token in req.stoppers and emitted + k + 1 > params.min_tokens:
                    stopper = token
                    # Like every engine: a stop token is output, an end-of-sequence one is not.
                    ids = ids[: k + 1] if token in params.stop_token_ids else ids[:k]
                    break
        out = SequenceOutput(index=choice.index, token_ids=ids)
        if emitted == 0 and params.prompt_logprobs:
            prompt = req.request.prompt_token_ids
            out.prompt_logprobs = [
                self._logprob(token, k, params.top_logprobs) for k, token in enumerate(prompt[1:])
            ]
        if params.logprobs:
            out.logprobs = [
                self._logprob(token, first + k, params.top_logprobs) for k, token in enumerate(ids)
            ]
        req.channel.put([out])
        choice.emitted = emitted + len(ids)
        self._generated_tokens += len(ids)
        if stopper is not None:
            if stopper in params.stop_token_ids:
                self._finish(choice, EngineFinish.STOP_TOKEN, now, stop_token_id=stopper)
            else:
                self._finish(choice, EngineFinish.EOS, now)
        elif choice.emitted >= limit:
            self._finish(choice, req.limit_finish, now)

    def _logprob(self, token: int, position: int, top: int) -> TokenLogprob:
        alternatives = tuple(
            (self._vocab[(position + r) % len(self._vocab)], _LOG_HALF * (r + 1))
            for r in range(top)
        )
        return TokenLogprob(token_id=token, logprob=_LOG_HALF, top=alternatives)

    def _finish(
        self,
        choice: _Choice,
        reason: EngineFinish,
        now: float,
        stop_token_id: int | None = None,
    ) -> None:
        req = choice.request
        choice.done = True
        req.unfinished -= 1
        if req.unfinished == 0:
            # Nothing more will be emitted: stop counting it now, not when the reader drains.
            self._requests.pop(req.request.request_id, None)
            self._leave_batch(req, now)
        req.channel.put(
            [
                SequenceOutput(
                    index=choice.index, token_ids=[], finish=reason, stop_token_id=stop_token_id
                )
            ]
        )
