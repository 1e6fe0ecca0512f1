"""Request builders, a stream collector and a greedy oracle for the torch engine tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from transformers import PreTrainedModel

from inference.engines.base import (
    Engine,
    EngineFinish,
    EngineRequest,
    SequenceOutput,
    TokenLogprob,
)
from tests.support.engine_requests import engine_request

TINY_EOS = 2  # matches tests/unit/engines/conftest.py


def make_request(
    request_id: str,
    prompt: list[int] | None = None,
    *,
    eos: frozenset[int] = frozenset({TINY_EOS}),
    deadline: float | None = None,
    **params: Any,
) -> EngineRequest:
    return engine_request(
        prompt if prompt is not None else [5, 6, 7],
        request_id=request_id,
        eos=eos,
        deadline=deadline,
        **params,
    )


@dataclass
class Collected:
    tokens: dict[int, list[int]] = field(default_factory=dict)
    finishes: dict[int, SequenceOutput] = field(default_factory=dict)
    logprobs: dict[int, list[TokenLogprob]] = field(default_factory=dict)
    # When each yielded batch arrived (perf_counter), for interleaving checks.
    arrivals: list[float] = field(default_factory=list)

    def finish(self, index: int = 0) -> EngineFinish | None:
        return self.finishes[index].finish


async def collect(
    engine: Engine,
    request: EngineRequest,
    on_batch: Callable[[int], None] | None = None,
) -> Collected:
    """Read a whole stream, checking the contract: one finish per choice, nothing after it.

    `on_batch(k)` runs after the k-th yielded batch, so a test can start other requests at
    a known point of this one.
    """
    got = Collected()
    async for outputs in engine.generate(request):
        got.arrivals.append(time.perf_counter())
        if on_batch is not None:
            on_batch(len(got.arrivals))
        for out in outputs:
            assert out.index not in got.finishes, f"output for choice {out.index} after its finish"
            got.tokens.setdefault(out.index, []).extend(out.token_ids)
            if out.logprobs is not None:
                assert len(out.logprobs) == len(out.token_ids)
                got.logprobs.setdefault(out.index, []).extend(out.logprobs)
            if out.finish is not None:
                got.finishes[out.index] = out
    assert sorted(got.finishes) == list(range(request.params.n))
    return got


def greedy_without_cache(model: PreTrainedModel, prompt: list[int], steps: int) -> list[int]:
    """Oracle: re-run the whole sequence every step, no cache, no padding, no batch."""
    seq = list(prompt)
    with torch.inference_mode():
        for _ in range(steps):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt) :]


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll `predicate` every 5 ms until it holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def open_stream(
    engine: Engine, request: EngineRequest
) -> AsyncGenerator[list[SequenceOutput], None]:
    """`engine.generate` typed as the async generator it is, so tests can `aclose()` it."""
    return cast(AsyncGenerator[list[SequenceOutput], None], engine.generate(request))


@contextmanager
def recorded_forwards(model: PreTrainedModel) -> Iterator[list[tuple[int, int]]]:
    """Record (rows, tokens per row) of every forward pass the engine makes."""
    calls: list[tuple[int, int]] = []
    original = model.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        ids = kwargs["input_ids"]
        calls.append((int(ids.shape[0]), int(ids.shape[1])))
        return original(*args, **kwargs)

    model.forward = forward  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        del model.forward  # back to the class's method
