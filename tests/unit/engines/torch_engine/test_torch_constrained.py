"""The torch engine's batched step with constrained and unconstrained rows side by side."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference.engines.base import EngineFinish
from inference.engines.torch.engine import TorchEngine
from inference.grammar import CompiledConstraint, GrammarCompiler, GrammarSpec
from inference.text.tokenizer import ModelTokenizer
from tests.unit.engines.torch_engine.helpers import collect, make_request

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "maximum": 99}},
    "required": ["ok", "n"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
async def engine(tiny_mistral_dir: Path) -> AsyncIterator[TorchEngine]:
    eng = TorchEngine(tiny_mistral_dir, max_batch_size=8)
    await eng.start()
    yield eng
    await eng.shutdown()


@pytest.fixture(scope="module")
async def constraint(tiny_mistral_dir: Path, engine: TorchEngine) -> CompiledConstraint:
    tokenizer = ModelTokenizer.from_pretrained(tiny_mistral_dir)
    compiler = GrammarCompiler(
        tokenizer.hf, vocab_size=engine.vocab_size, stop_token_ids=tokenizer.eos_token_ids
    )
    return await compiler.compile(GrammarSpec("json_schema", json.dumps(SCHEMA)))


async def test_constrained_rows_follow_the_grammar_and_leave_their_neighbours_alone(
    engine: TorchEngine, constraint: CompiledConstraint
) -> None:
    eos = frozenset({2})
    plain = make_request("plain", [1, 5, 6, 7], eos=eos, max_tokens=24, temperature=0.0)
    alone = await collect(engine, plain)
    constrained = dataclasses.replace(
        make_request("json", [1, 8, 9], eos=eos, max_tokens=40, temperature=1.0, seed=3, n=3),
        constraint=constraint,
    )
    mixed, side = await asyncio.gather(
        collect(engine, constrained),
        collect(engine, dataclasses.replace(plain, request_id="plain-again")),
    )
    # The unconstrained row got no mask: exactly the tokens it makes alone.
    assert side.tokens == alone.tokens
    assert mixed.tokens[0] != mixed.tokens[1]  # each choice has its own matcher and sample
    for index in range(3):
        matcher = constraint.new_matcher()
        assert all(matcher.accept(token) for token in mixed.tokens[index])
        if mixed.finish(index) == EngineFinish.EOS:
            # EOS was allowed only because the grammar could end: the output is complete.
            assert matcher.accept(2) and matcher.terminated
