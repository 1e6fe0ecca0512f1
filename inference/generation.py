"""Runs one planned request on its engine and yields GenerateResponse messages.

Engines yield everything produced since the stream last read (see `Engine.generate`), and
each read becomes at most one merged Delta per choice: a reader that keeps up gets one
message per engine step, a lagging reader fewer, larger messages instead of a backlog.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import cast

from inference.choices import ChoiceAssembler
from inference.engines.base import SequenceOutput
from inference.prepare import GenerationPlan
from tensorchat.v1 import inference_pb2 as pb


class EngineStreamError(RuntimeError):
    """The engine's stream ended without finishing every choice."""


async def stream_generation(plan: GenerationPlan) -> AsyncGenerator[pb.GenerateResponse, None]:
    """The request's messages; the engine paces them as `plan.engine_request.pace` says."""
    engine = plan.model.engine
    request = plan.engine_request
    assemblers = [
        ChoiceAssembler(
            index,
            plan.model.tokenizer,
            prompt_tokens=plan.prompt_tokens,
            stops=plan.stops,
            output=plan.output,
            logprobs=request.params.logprobs,
        )
        for index in range(request.params.n)
    ]
    unfinished = len(assemblers)
    outputs_stream = cast(AsyncGenerator[list[SequenceOutput], None], engine.generate(request))
    # Closing the engine's stream (all choices done, even if stop strings finished them before
    # the engine knew; the client went away; a failure) makes the engine drop the request.
    async with contextlib.aclosing(outputs_stream):
        async for outputs in outputs_stream:
            for index, choice_outputs in _by_choice(outputs):
                delta, finished = assemblers[index].feed(choice_outputs)
                if delta is not None:
                    yield pb.GenerateResponse(index=index, delta=delta)
                if finished is not None:
                    unfinished -= 1
                    if finished.reason == pb.FINISH_REASON_STOP_SEQUENCE and unfinished:
                        engine.finish_choice(request.request_id, index)
                    yield pb.GenerateResponse(index=index, finished=finished)
            if not unfinished:
                return
    raise EngineStreamError(
        f"engine {engine.name} ended request {request.request_id} with "
        f"{unfinished} unfinished choice(s)"
    )


def _by_choice(outputs: list[SequenceOutput]) -> list[tuple[int, list[SequenceOutput]]]:
    """Outputs grouped by choice index, in index order (the common n == 1 case without work)."""
    first = outputs[0].index if outputs else 0
    if all(output.index == first for output in outputs):
        return [(first, outputs)] if outputs else []
    groups: dict[int, list[SequenceOutput]] = {}
    for output in outputs:
        groups.setdefault(output.index, []).append(output)
    return sorted(groups.items())
