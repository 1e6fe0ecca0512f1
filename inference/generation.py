"""Runs one planned request on its engine and yields GenerateResponse messages.

Engine outputs are collected by a pump task while the gRPC writer is busy; the writer then
takes everything pending at once and sends one merged Delta per choice. So a reader that keeps
up gets one message per engine step, and a lagging reader gets fewer, larger messages instead
of an ever-growing backlog.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator

from inference.choices import ChoiceAssembler
from inference.engines.base import SequenceOutput
from inference.prepare import GenerationPlan
from tensorchat.v1 import inference_pb2 as pb


class EngineStreamError(RuntimeError):
    """The engine's stream ended without finishing every choice."""


async def stream_generation(plan: GenerationPlan) -> AsyncIterator[pb.GenerateResponse]:
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
    pending: list[SequenceOutput] = []
    wakeup = asyncio.Event()
    failure: list[BaseException] = []
    engine_done = False

    async def pump() -> None:
        nonlocal engine_done
        try:
            async for outputs in engine.generate(request):
                pending.extend(outputs)
                wakeup.set()
        except Exception as error:  # handed to the writer, which raises it for the RPC
            failure.append(error)
        finally:
            engine_done = True
            wakeup.set()

    pump_task = asyncio.create_task(pump(), name=f"pump-{request.request_id}")
    unfinished = len(assemblers)
    try:
        while unfinished:
            await wakeup.wait()
            wakeup.clear()
            batch = pending[:]
            pending.clear()
            by_choice: defaultdict[int, list[SequenceOutput]] = defaultdict(list)
            for output in batch:
                by_choice[output.index].append(output)
            for index in sorted(by_choice):
                assembler = assemblers[index]
                delta, finished = assembler.feed(by_choice[index])
                if delta is not None:
                    yield pb.GenerateResponse(index=index, delta=delta)
                if finished is not None:
                    unfinished -= 1
                    if finished.reason == pb.FINISH_REASON_STOP_SEQUENCE and unfinished:
                        engine.finish_choice(request.request_id, index)
                    yield pb.GenerateResponse(index=index, finished=finished)
            if engine_done and not pending and unfinished:
                if failure:
                    raise failure[0]
                raise EngineStreamError(
                    f"engine {engine.name} ended request {request.request_id} with "
                    f"{unfinished} unfinished choice(s)"
                )
    finally:
        # Every choice is done (stop strings may finish them before the engine knows), the
        # client went away, or something failed: in every case the engine must drop the request.
        pump_task.cancel()
