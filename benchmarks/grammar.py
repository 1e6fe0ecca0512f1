"""What constrained decoding costs the torch engine: throughput, compile time, mask cost.

    .venv/bin/python benchmarks/grammar.py --streams 1,8

In-process on the embedded default model (SmolLM2-135M; --checkpoint for another): decode
tok/s of greedy requests with and without a JSON schema at each stream count (the
unconstrained ones run a fixed length, the constrained ones until the grammar ends or the same
max_tokens), the grammar compile time cold and from the cache, and the per-token cost of
filling one row's bitmask and applying it to that row's logits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.engine_batching import tokens_per_second
from inference.config import default_models_config
from inference.engines.base import EngineRequest
from inference.engines.torch.engine import TorchEngine
from inference.engines.torch.loader import prepare_gguf_checkpoint
from inference.grammar import CompiledConstraint, GrammarCompiler, GrammarSpec, apply_bitmask
from inference.sampling import SamplingParams
from inference.text.messages import ChatMessage
from inference.text.tokenizer import ModelTokenizer

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        # Longer than --max-tokens can write: every constrained request runs the same number of
        # decode steps as a free one, so the two rates compare the per-token cost, not how
        # soon the JSON ends (a shorter request pays its prefill over fewer tokens).
        "summary": {"type": "string", "minLength": 2000},
    },
    "required": ["title", "year", "tags", "summary"],
    "additionalProperties": False,
}
PROMPT = "Describe a made-up film as JSON with a title, year, tags and a long summary."


async def throughput(
    engine: TorchEngine,
    prompt: list[int],
    eos: frozenset[int],
    streams: int,
    max_tokens: int,
    constraint: CompiledConstraint | None,
) -> float:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=constraint is None)
    return await tokens_per_second(
        engine,
        streams,
        lambda name: EngineRequest(name, prompt, params, eos, constraint=constraint),
    )


async def compile_times(compiler: GrammarCompiler, repeats: int) -> tuple[float, float]:
    """Median cold compile (a schema never seen) and cached compile, in ms."""
    cold, cached = [], []
    for i in range(repeats):
        schema = dict(SCHEMA, title=f"run {i}")  # a new source: a cache miss
        spec = GrammarSpec("json_schema", json.dumps(schema))
        started = time.perf_counter()
        await compiler.compile(spec)
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        await compiler.compile(spec)
        cached.append(time.perf_counter() - started)
    return statistics.median(cold) * 1e3, statistics.median(cached) * 1e3


def mask_cost(constraint: CompiledConstraint, tokenizer: ModelTokenizer, repeats: int) -> float:
    """Median µs to fill one row's bitmask and apply it, mid-way through a JSON string."""
    text = '{"title": "The long walk home", "year": 1984, "tags": ["drama"], "summary": "A'
    matcher = constraint.new_matcher()
    for token in tokenizer.hf.encode(text, add_special_tokens=False):
        assert matcher.accept(token), "the sample text must follow the schema"
    logits = torch.randn(1, constraint.vocab_size)
    bitmask = constraint.allocate_bitmask(1)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        matcher.fill_bitmask(bitmask, 0)
        apply_bitmask(logits, bitmask, [0])
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,8", help="stream counts, comma-separated")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--checkpoint", type=Path, help="a HF checkpoint dir (default: embedded)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    checkpoint = args.checkpoint
    if checkpoint is None:
        gguf = default_models_config().models[0].gguf
        assert gguf is not None
        checkpoint = prepare_gguf_checkpoint(gguf)
    tokenizer = ModelTokenizer.from_pretrained(checkpoint)
    engine = TorchEngine(checkpoint, max_batch_size=32)
    await engine.start()
    try:
        started = time.perf_counter()
        compiler = GrammarCompiler(
            tokenizer.hf,
            vocab_size=max(engine.vocab_size, tokenizer.vocab_size),
            stop_token_ids=tokenizer.eos_token_ids,
        )
        print(f"tokenizer info: {(time.perf_counter() - started) * 1e3:.0f} ms (once per model)")
        cold, cached = await compile_times(compiler, args.repeats)
        print(f"compile: cold {cold:.2f} ms, cached {cached:.4f} ms (medians)")
        constraint = await compiler.compile(GrammarSpec("json_schema", json.dumps(SCHEMA)))
        print(f"mask fill+apply: {mask_cost(constraint, tokenizer, args.repeats * 10):.0f} µs/row")
        prompt = tokenizer.encode_chat([ChatMessage("user", PROMPT)])
        eos = tokenizer.eos_token_ids
        for streams in (int(s) for s in args.streams.split(",")):
            free = await throughput(engine, prompt, eos, streams, args.max_tokens, None)
            json_rate = await throughput(engine, prompt, eos, streams, args.max_tokens, constraint)
            print(
                f"{streams:3d} streams: {free:7.1f} tok/s free, {json_rate:7.1f} tok/s with the "
                f"schema ({json_rate / free - 1:+.1%})"
            )
    finally:
        await engine.shutdown()
        compiler.close()


if __name__ == "__main__":
    asyncio.run(main())
