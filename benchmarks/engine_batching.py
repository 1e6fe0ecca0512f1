"""Decode throughput of the torch engine alone, in-process, at several batch sizes and dtypes.

    .venv/bin/python benchmarks/engine_batching.py --streams 1,8 --dtype bfloat16

Runs the embedded default model (converted once into the cache) with greedy, fixed-length
requests; no gRPC, so it isolates what batching and the dtype do to the engine itself.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from inference.config import default_models_config
from inference.engines.base import EngineRequest
from inference.engines.torch.engine import TorchEngine
from inference.engines.torch.loader import prepare_gguf_checkpoint
from inference.sampling import SamplingParams


async def measure(
    engine: TorchEngine, streams: int, prompt_tokens: int, output_tokens: int
) -> float:
    params = SamplingParams(max_tokens=output_tokens, temperature=0.0, ignore_eos=True)
    prompt = list(range(100, 100 + prompt_tokens))
    return await tokens_per_second(
        engine, streams, lambda name: EngineRequest(name, prompt, params)
    )


async def tokens_per_second(
    engine: TorchEngine, streams: int, request: Callable[[str], EngineRequest]
) -> float:
    """Generated tokens per second of `streams` requests run at once, after one warm-up round;
    `request(name)` makes each request."""

    async def one(name: str) -> int:
        count = 0
        async for outputs in engine.generate(request(name)):
            count += sum(len(output.token_ids) for output in outputs)
        return count

    await asyncio.gather(*(one(f"warm-{i}") for i in range(streams)))
    started = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(f"run-{i}") for i in range(streams))))
    return tokens / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,8,32", help="batch sizes, comma-separated")
    parser.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--output-tokens", type=int, default=48)
    args = parser.parse_args()
    gguf = default_models_config().models[0].gguf
    assert gguf is not None
    engine = TorchEngine(prepare_gguf_checkpoint(gguf), max_batch_size=32, dtype=args.dtype)
    await engine.start()
    try:
        baseline = None
        for streams in (int(s) for s in args.streams.split(",")):
            rate = await measure(engine, streams, args.prompt_tokens, args.output_tokens)
            baseline = baseline or rate
            print(f"{args.dtype} {streams:3d} streams: {rate:7.1f} tok/s ({rate / baseline:.2f}x)")
    finally:
        await engine.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
