"""Shared helpers of the TensorRT-LLM adapter tests: requests and collected outputs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from inference.engines.base import EngineFinish, EngineRequest, SequenceOutput
from inference.engines.trtllm import TrtllmEngine
from tests.support.engine_requests import engine_request

MODEL_ID = "test/tiny-model"
VOCAB = 1000
MAX_INPUT_LEN = 96
MAX_SEQ_LEN = 128


@dataclass
class Collected:
    """Everything a generate() call yielded, per choice."""

    batches: list[list[SequenceOutput]] = field(default_factory=list)

    def outputs(self, index: int = 0) -> list[SequenceOutput]:
        return [o for batch in self.batches for o in batch if o.index == index]

    def tokens(self, index: int = 0) -> list[int]:
        return [t for o in self.outputs(index) for t in o.token_ids]

    def finals(self, index: int = 0) -> list[SequenceOutput]:
        return [o for o in self.outputs(index) if o.finish is not None]

    def finish(self, index: int = 0) -> EngineFinish | None:
        finals = self.finals(index)
        assert len(finals) == 1, f"choice {index} finished {len(finals)} times"
        return finals[0].finish


def request(
    prompt: list[int],
    *,
    request_id: str = "req-1",
    eos: frozenset[int] = frozenset(),
    deadline: float | None = None,
    **params: Any,
) -> EngineRequest:
    return engine_request(prompt, request_id=request_id, eos=eos, deadline=deadline, **params)


async def collect(engine: TrtllmEngine, req: EngineRequest) -> Collected:
    collected = Collected()
    async for batch in engine.generate(req):
        collected.batches.append(batch)
    return collected


EngineFactory = Callable[..., Awaitable[TrtllmEngine]]
