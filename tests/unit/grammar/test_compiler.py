"""GrammarCompiler: the cache, the time limit, and refusals of bad sources."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
import xgrammar

from inference.grammar import ConstraintError, GrammarCompiler, GrammarSpec

SCHEMA = GrammarSpec("json_schema", '{"type": "object", "properties": {"a": {"type": "integer"}}}')


async def test_a_spec_is_compiled_once_then_served_from_the_cache(
    compiler: GrammarCompiler,
) -> None:
    first = await compiler.compile(SCHEMA)
    again = await compiler.compile(GrammarSpec(SCHEMA.kind, SCHEMA.source))
    assert again is first
    assert (compiler.misses, compiler.hits) == (1, 1)


async def test_concurrent_requests_for_one_spec_share_one_compile(
    compiler: GrammarCompiler,
) -> None:
    results = await asyncio.gather(*(compiler.compile(SCHEMA) for _ in range(4)))
    assert all(result is results[0] for result in results)
    assert compiler.misses == 1


async def test_the_cache_forgets_the_least_recently_used(compiler: GrammarCompiler) -> None:
    compiler._cache_size = 2
    specs = [GrammarSpec("regex", f"x{i}") for i in range(3)]
    for spec in specs:
        await compiler.compile(spec)
    assert [compiler.cached(spec) for spec in specs] == [False, True, True]


async def test_a_slow_compile_times_out_then_lands_in_the_cache(
    compiler: GrammarCompiler, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    compile_now = compiler._compile_now

    def stuck(spec: GrammarSpec) -> Any:
        release.wait(10)
        return compile_now(spec)

    monkeypatch.setattr(compiler, "_compile_now", stuck)
    compiler.timeout_s = 0.01
    with pytest.raises(ConstraintError, match=r"took longer than 0\.01s"):
        await compiler.compile(SCHEMA)
    release.set()
    compiler.timeout_s = 10.0
    await asyncio.get_running_loop().run_in_executor(None, lambda: None)
    constraint = await compiler.compile(SCHEMA)
    assert constraint.spec == SCHEMA
    assert compiler.misses == 1  # the abandoned compile finished and was kept


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (GrammarSpec("json_schema", "{"), "not valid JSON"),
        (GrammarSpec("json_schema", "[]"), "must be a JSON object"),
        (GrammarSpec("json_schema", '{"type": 5}'), "invalid grammar"),
        (GrammarSpec("regex", "(("), "invalid grammar: Regex"),
        (GrammarSpec("ebnf", "root ::= nothing"), "invalid grammar: EBNF"),
        (GrammarSpec("regex", " "), "source is empty"),
    ],
)
async def test_bad_sources_are_refused(
    compiler: GrammarCompiler, spec: GrammarSpec, message: str
) -> None:
    with pytest.raises(ConstraintError, match=message):
        await compiler.compile(spec)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown grammar kind"):
        GrammarSpec("xml", "")  # type: ignore[arg-type]


async def test_a_structural_tags_json_sections_compile_compact(compiler: GrammarCompiler) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    tag = {"type": "tag", "begin": "<f>", "content": {"type": "json_schema", "json_schema": schema}}
    source = {"type": "structural_tag", "format": {**tag, "end": "</f>"}}
    compiled = await compiler.compile(GrammarSpec("structural_tag", json.dumps(source)))
    # The executor gets the same compact grammar: no json_schema section left for it to
    # compile with any whitespace.
    guide = json.loads(compiled.guide.guide)
    assert guide["format"]["content"]["type"] == "grammar"
    for text, valid in (('<f>{"a": 1}</f>', True), ('<f>{ "a": 1}</f>', False)):
        assert xgrammar.GrammarMatcher(compiled.grammar).accept_string(text) is valid, text
