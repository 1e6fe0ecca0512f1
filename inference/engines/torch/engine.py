"""TorchEngine: Hugging Face transformers on PyTorch with continuous batching in one worker thread.

One thread owns the model and runs the step loop: every step it retires cancelled, stopped
and expired rows, advances all running rows with one batched forward pass, prefills newly
admitted requests (which join the running batch for the next step), and hands everything
the step produced to the event loop with a single `call_soon_threadsafe`. torch releases
the GIL inside its ops, so the event loop stays responsive while a step runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel

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
from inference.engines.torch.batch import KVBatch
from inference.engines.torch.loader import load_model
from inference.engines.torch.sampler import RowSampler, SampledToken, Sampler

logger = logging.getLogger(__name__)

# Padded tokens one prefill may cost (rows x longest prompt), so that a burst of arrivals
# does not stall the running rows for one huge step; one request is always admitted.
_PREFILL_TOKEN_BUDGET = 8192
# Prompt positions scored at once (prompt logprobs): bounds the log-softmax's extra memory.
_SCORE_SLICE = 256


class TorchEngineError(RuntimeError):
    """A fault inside the engine's step loop ended this request."""


@dataclass(eq=False)
class _Request:
    request: EngineRequest
    channel: OutputChannel
    # Set from the event loop, read by the worker at its next step.
    cancelled: bool = False
    failed: bool = False  # its step failed: the worker dropped it
    finish_requested: set[int] = field(default_factory=set)
    # Worker-side: choices still in the batch.
    open_rows: int = 0

    @property
    def n(self) -> int:
        return self.request.params.n


@dataclass(eq=False)
class _Row:
    req: _Request
    index: int
    sampler: RowSampler
    next_token: int = -1  # sampled, not yet fed to the model
    done: bool = False


class _Outbox:
    """What one step produced, delivered to the event loop in one call."""

    def __init__(self) -> None:
        self.outputs: dict[_Request, list[SequenceOutput]] = {}
        self.errors: dict[_Request, BaseException] = {}

    def add(self, req: _Request, output: SequenceOutput) -> None:
        self.outputs.setdefault(req, []).append(output)

    def fail(self, req: _Request, exc: BaseException) -> None:
        self.errors[req] = exc
        self.outputs.pop(req, None)

    def items(self) -> list[tuple[_Request, list[SequenceOutput] | BaseException]]:
        items: list[tuple[_Request, list[SequenceOutput] | BaseException]] = [
            (req, sorted(outs, key=lambda o: o.index))
            for req, outs in self.outputs.items()
            if not req.cancelled
        ]
        items.extend(self.errors.items())
        return items


class TorchEngine(Engine):
    """Continuous-batching engine over a transformers causal LM (CPU by default).

    `max_batch_size` caps the sequences decoding together (a request counts n); more wait
    in a FIFO queue. `num_threads` sets torch's intra-op threads (process-wide).
    `processed_logprobs` reports logprobs of the processed distribution instead of the
    model's raw one (see sampler.py).
    """

    name = "torch"

    def __init__(
        self,
        checkpoint_dir: Path,
        *,
        max_batch_size: int = 32,
        dtype: str = "float32",
        device: str = "cpu",
        num_threads: int | None = None,
        processed_logprobs: bool = False,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.checkpoint_dir = Path(checkpoint_dir)
        self.max_batch_size = max_batch_size
        self.dtype = dtype
        self.device = device
        self.num_threads = num_threads
        self._processed_logprobs = processed_logprobs
        self._model: PreTrainedModel | None = None
        self._sampler: Sampler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Written by the worker thread only; a plain int read is safe from the loop.
        self._generated_tokens = 0
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._waiting: collections.deque[_Request] = collections.deque()
        self._stopping = False
        self._by_id: dict[str, _Request] = {}
        # Worker-owned state.
        self._rows: list[_Row] = []
        self._batch = KVBatch()
        self._active = 0
        # Admitted this step, not yet in the batch (failed with the batch if a step breaks).
        self._admitted: list[_Request] = []

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def model(self) -> PreTrainedModel:
        """The loaded transformers model (after `start`)."""
        return self._require_model()

    @property
    def vocab_size(self) -> int:
        return int(self._require_model().config.vocab_size)

    @property
    def max_context_len(self) -> int:
        """Prompt plus generated tokens one sequence may hold."""
        return int(self._require_model().config.max_position_embeddings)

    async def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("TorchEngine.start() called twice")
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        self._loop = asyncio.get_running_loop()
        self._model = await asyncio.to_thread(
            load_model, self.checkpoint_dir, dtype=self.dtype, device=self.device
        )
        self._sampler = Sampler(
            vocab_size=self.vocab_size,
            device=self._model.device,
            processed_logprobs=self._processed_logprobs,
        )
        self._thread = threading.Thread(target=self._run, name="torch-engine", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    # ---- the Engine interface (event-loop side) --------------------------------------

    async def generate(self, request: EngineRequest) -> AsyncIterator[list[SequenceOutput]]:
        req = self._submit(request)
        try:
            async for outputs in req.channel:
                yield outputs
        finally:
            # A request whose step failed was already dropped by the worker.
            if not (req.failed or req.channel.drained):
                self._cancel(req)
            if self._by_id.get(request.request_id) is req:
                del self._by_id[request.request_id]

    def finish_choice(self, request_id: str, index: int) -> None:
        req = self._by_id.get(request_id)
        if req is None:
            return  # already finished: nothing to end
        req.finish_requested.add(index)
        self._wake()

    @property
    def generated_tokens(self) -> int:
        return self._generated_tokens

    def stats(self) -> EngineStats:
        # A dynamic cache has no fixed capacity: report occupancy of the batch's slots.
        return EngineStats(
            active_requests=self._active,
            queued_requests=len(self._waiting),
            kv_cache_usage=len(self._rows) / self.max_batch_size,
            generated_tokens=self._generated_tokens,
        )

    def _submit(self, request: EngineRequest) -> _Request:
        self._validate(request)
        if request.request_id in self._by_id:
            raise EngineRequestError(f"request id {request.request_id!r} is already running")
        req = _Request(request, OutputChannel(request.params.n, request.pace))
        with self._cond:
            if self._stopping or self._thread is None:
                raise EngineUnavailableError("the torch engine is not running")
            self._waiting.append(req)
            self._cond.notify()
        self._by_id[request.request_id] = req
        return req

    def _validate(self, request: EngineRequest) -> None:
        params = request.params
        prompt = request.prompt_token_ids
        vocab = self.vocab_size
        if not prompt:
            raise EngineRequestError("the prompt has no tokens")
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise EngineRequestError(f"prompt token ids must lie in [0, {vocab})")
        if not 1 <= params.n <= self.max_batch_size:
            raise EngineRequestError(
                f"n must lie in [1, {self.max_batch_size}] on this engine", param="n"
            )
        if params.max_tokens < 1:
            raise EngineRequestError("max_tokens must be at least 1")
        limit = self.max_context_len
        if len(prompt) + params.max_tokens > limit:
            raise EngineRequestError(
                f"this model's maximum context length is {limit} tokens; the prompt has "
                f"{len(prompt)} and max_tokens asks for {params.max_tokens} more"
            )
        constraint = request.constraint
        if constraint is not None:
            if constraint.vocab_size < vocab:
                raise EngineRequestError(
                    f"the constraint covers {constraint.vocab_size} token ids, the model has "
                    f"{vocab}"
                )
            # The grammar decides where the output ends (EOS only once it may end).
            if params.ignore_eos or params.min_tokens:
                raise EngineRequestError("a constraint excludes ignore_eos and min_tokens")
        for name, ids in (
            ("logit_bias", params.logit_bias.keys()),
            ("stop_token_ids", params.stop_token_ids),
        ):
            if any(not 0 <= i < vocab for i in ids):
                raise EngineRequestError(f"{name} token ids must lie in [0, {vocab})", param=name)

    def _cancel(self, req: _Request) -> None:
        req.cancelled = True
        self._wake()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _deliver(self, items: list[tuple[_Request, list[SequenceOutput] | BaseException]]) -> None:
        for req, item in items:
            if isinstance(item, BaseException):
                req.failed = True
                failure = TorchEngineError(f"torch engine step failed: {item!r}")
                failure.__cause__ = item
                req.channel.fail(failure)
            else:
                req.channel.put(item)

    def _require_model(self) -> PreTrainedModel:
        if self._model is None:
            raise EngineUnavailableError("the torch engine is not started")
        return self._model

    # ---- the step loop (worker thread) -----------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._stopping or self._waiting or self._rows):
                        self._cond.wait()
                    if self._stopping:
                        break
                out = _Outbox()
                try:
                    self._step(out)
                except Exception as exc:  # a bug outside the guarded model calls
                    logger.exception("torch engine step failed")
                    self._fail_all(out, exc)
                self._send(out)
            self._cancel_everything()

    def _step(self, out: _Outbox) -> None:
        now = time.monotonic()
        self._retire(out, now)
        new = self._admitted = self._admit(out, now)
        if self._rows:
            try:
                self._decode(out)
            except Exception as exc:
                logger.exception("torch engine decode step failed")
                self._fail_running(out, exc)
        if new:
            try:
                self._prefill(new, out)
            except Exception as exc:
                logger.exception("torch engine prefill failed")
                for req in new:
                    out.fail(req, exc)
                self._active -= len(new)
            self._admitted = []
        self._remove_done()

    def _retire(self, out: _Outbox, now: float) -> None:
        """End rows whose request was cancelled, whose choice was finished or whose time is up."""
        for row in self._rows:
            req = row.req
            deadline = req.request.deadline
            if req.cancelled:
                row.done = True
            elif row.index in req.finish_requested:
                self._finish(row, out, EngineFinish.CANCELLED)
            elif deadline is not None and now >= deadline:
                self._finish(row, out, EngineFinish.TIME_LIMIT)
        self._remove_done()

    def _admit(self, out: _Outbox, now: float) -> list[_Request]:
        """Take queued requests that fit (FIFO); drop cancelled ones, expire late ones."""
        new: list[_Request] = []
        rows = len(self._rows)
        longest = 0
        with self._cond:
            for req in [r for r in self._waiting if r.cancelled]:
                self._waiting.remove(req)
            for req in [r for r in self._waiting if _expired(r, now)]:
                self._waiting.remove(req)
                for index in range(req.n):
                    out.add(req, SequenceOutput(index, [], finish=EngineFinish.TIME_LIMIT))
            while self._waiting:
                req = self._waiting[0]
                if rows + req.n > self.max_batch_size:
                    break
                # A prompt to score needs every position's logits (prompt x vocabulary):
                # it prefills alone, so that no other prompt's padding multiplies that.
                if new and (_scores_prompt(req) or _scores_prompt(new[0])):
                    break
                width = max(longest, len(req.request.prompt_token_ids))
                if new and (len(new) + 1) * width > _PREFILL_TOKEN_BUDGET:
                    break
                self._waiting.popleft()
                req.request.timings.mark_scheduled(now)
                new.append(req)
                rows += req.n
                longest = width
            self._active += len(new)
        return new

    def _decode(self, out: _Outbox) -> None:
        model, sampler = self._require_model(), self._require_sampler()
        tokens = torch.tensor([row.next_token for row in self._rows], dtype=torch.long)
        logits = self._batch.decode(model, tokens)
        sampled = sampler.sample(logits, [row.sampler for row in self._rows])
        for row, token in zip(self._rows, sampled, strict=True):
            self._record(row, token, out)

    def _prefill(self, new: list[_Request], out: _Outbox) -> None:
        model, sampler = self._require_model(), self._require_sampler()
        scoring = _scores_prompt(new[0])  # then it is alone (_admit)
        prompts = [r.request.prompt_token_ids for r in new]
        batch, logits = KVBatch.prefill(model, prompts, all_logits=scoring)
        prompt_logprobs = None
        if scoring:
            prompt_logprobs = _prompt_logprobs(logits[0], new[0].request, self.vocab_size)
            logits = logits[:, -1, :]
        # n choices share their request's prefill: repeat its cache row n times.
        expand = [i for i, req in enumerate(new) for _ in range(req.n)]
        if len(expand) != len(new):
            batch.select(expand)
            logits = logits[expand]
        rows: list[_Row] = []
        for req in new:
            prompt_mask = None
            if req.request.params.repetition_penalty != 1.0:
                prompt_mask = sampler.prompt_mask(req.request.prompt_token_ids)
            for index in range(req.n):
                row_sampler = sampler.new_row(
                    req.request.params,
                    index=index,
                    prompt_mask=prompt_mask,
                    eos_token_ids=req.request.eos_token_ids,
                    constraint=req.request.constraint,
                )
                rows.append(_Row(req, index, row_sampler))
            req.open_rows = req.n
        sampled = sampler.sample(logits, [row.sampler for row in rows])
        self._batch.extend(batch)
        self._rows.extend(rows)
        for row, token in zip(rows, sampled, strict=True):
            self._record(row, token, out)
            if prompt_logprobs is not None:
                out.outputs[row.req][-1].prompt_logprobs = prompt_logprobs  # its first output

    def _record(self, row: _Row, token: SampledToken, out: _Outbox) -> None:
        """Turn a sampled token into the row's output; decide whether the row ends here.

        Conventions shared with the trtllm engine: an EOS finish never includes the eos
        token (TensorRT-LLM never hands out its end_id), a STOP_TOKEN finish includes the
        stop token (as vLLM and TensorRT-LLM stop words do).
        """
        params = row.req.request.params
        t = token.token_id
        if not params.ignore_eos and t in row.req.request.eos_token_ids:
            self._finish(row, out, EngineFinish.EOS)
            return
        finish: EngineFinish | None = None
        stop_token_id: int | None = None
        if t in params.stop_token_ids:
            finish, stop_token_id = EngineFinish.STOP_TOKEN, t
        elif row.sampler.generated >= params.max_tokens:
            finish = EngineFinish.LENGTH
        logprobs = [token.logprob] if token.logprob is not None else None
        self._generated_tokens += 1
        out.add(
            row.req,
            SequenceOutput(
                row.index, [t], logprobs=logprobs, finish=finish, stop_token_id=stop_token_id
            ),
        )
        row.next_token = t
        row.done = finish is not None

    def _finish(
        self, row: _Row, out: _Outbox, finish: EngineFinish, stop_token_id: int | None = None
    ) -> None:
        out.add(row.req, SequenceOutput(row.index, [], finish=finish, stop_token_id=stop_token_id))
        row.done = True

    def _remove_done(self) -> None:
        if not any(row.done for row in self._rows):
            return
        keep = [i for i, row in enumerate(self._rows) if not row.done]
        for row in self._rows:
            if row.done:
                self._row_left(row.req)
        self._batch.select(keep)
        self._rows = [self._rows[i] for i in keep]

    def _row_left(self, req: _Request) -> None:
        req.open_rows -= 1
        if req.open_rows == 0:
            self._active -= 1

    def _fail_running(self, out: _Outbox, exc: BaseException) -> None:
        """The batch may be half-updated: fail every request in it and start an empty one."""
        running = _unique(row.req for row in self._rows)
        for req in running:
            out.fail(req, exc)
        self._active -= len(running)
        self._rows = []
        self._batch = KVBatch()

    def _fail_all(self, out: _Outbox, exc: BaseException) -> None:
        """After an unexpected error: fail the batch and whatever was being admitted."""
        self._fail_running(out, exc)
        for req in self._admitted:
            out.fail(req, exc)
        self._active -= len(self._admitted)
        self._admitted = []

    def _cancel_everything(self) -> None:
        out = _Outbox()
        for row in self._rows:
            self._finish(row, out, EngineFinish.CANCELLED)
        self._remove_done()
        with self._cond:
            while self._waiting:
                req = self._waiting.popleft()
                for index in range(req.n):
                    out.add(req, SequenceOutput(index, [], finish=EngineFinish.CANCELLED))
        self._send(out)

    def _send(self, out: _Outbox) -> None:
        items = out.items()
        if not items or self._loop is None:
            return
        # A closed event loop means nobody is left to read.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._deliver, items)

    def _require_sampler(self) -> Sampler:
        if self._sampler is None:
            raise EngineUnavailableError("the torch engine is not started")
        return self._sampler


def _scores_prompt(req: _Request) -> bool:
    return req.request.params.prompt_logprobs


def _prompt_logprobs(
    logits: torch.Tensor, request: EngineRequest, vocab: int
) -> list[TokenLogprob]:
    """Each prompt token's log probability after the first, from one row's prefill logits
    [width, V] (the prompt right-aligned): position i's logits predict token i + 1."""
    prompt = request.prompt_token_ids
    top = request.params.top_logprobs
    rows = logits[logits.shape[0] - len(prompt) : -1, :vocab].float()
    scored: list[TokenLogprob] = []
    # In slices: a log-softmax copy of the whole prompt's logits would double the memory.
    for start in range(0, rows.shape[0], _SCORE_SLICE):
        lp = torch.log_softmax(rows[start : start + _SCORE_SLICE], dim=-1)
        targets = torch.tensor(prompt[start + 1 : start + 1 + lp.shape[0]], device=lp.device)
        chosen = lp.gather(1, targets[:, None])[:, 0].tolist()
        if top > 0:
            values, ids = lp.topk(min(top, lp.shape[-1]), dim=-1)
            tops = [
                tuple(zip(i, v, strict=True))
                for i, v in zip(ids.tolist(), values.tolist(), strict=True)
            ]
        else:
            tops = [()] * len(chosen)
        scored.extend(
            TokenLogprob(t, value, alternatives)
            for t, value, alternatives in zip(targets.tolist(), chosen, tops, strict=True)
        )
    return scored


def _expired(req: _Request, now: float) -> bool:
    return req.request.deadline is not None and now >= req.request.deadline


def _unique(reqs: Iterable[_Request]) -> list[_Request]:
    return list(dict.fromkeys(reqs))
