"""Which JSON Schema keywords are refused, and the xgrammar behaviour each refusal rests on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inference.grammar import CompiledConstraint, ConstraintError, GrammarCompiler, GrammarSpec
from inference.grammar.schema_policy import (
    UnenforceableSchemaError,
    check_enforceable,
    enforceable_form,
)

# (keyword, schema, an instance violating only that keyword): xgrammar accepts the instance,
# so the keyword is refused rather than silently unenforced.
UNENFORCED = [
    ("uniqueItems", {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "[1, 1]"),
    ("contains", {"type": "array", "items": {}, "contains": {"type": "string"}}, "[1]"),
    (
        "dependentRequired",
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "dependentRequired": {"a": ["b"]},
        },
        '{"a": 1}',
    ),
    ("not", {"not": {"type": "integer"}}, "1"),
    ("if", {"if": {"type": "integer"}, "then": {"minimum": 3}}, "1"),
    ("oneOf", {"oneOf": [{"type": "integer"}, {"type": "number"}]}, "1"),
    ("allOf", {"allOf": [{"type": "integer"}, {"minimum": 3}]}, "1"),
    ("multipleOf", {"type": "number", "multipleOf": 0.5}, "0.3"),
    ("format", {"type": "string", "format": "iri"}, '"% %"'),
    ("minimum", {"$defs": {"a": {"type": "integer"}}, "$ref": "#/$defs/a", "minimum": 3}, "1"),
    ("maxLength", {"type": "string", "pattern": "^[a-z]*$", "maxLength": 2}, '"abc"'),
]

# (schema, a violating instance) for keywords that are kept: xgrammar refuses the instance.
ENFORCED = [
    ({"type": "integer", "minimum": 3}, "2"),
    ({"type": "number", "exclusiveMaximum": 3.5}, "3.5"),
    ({"type": "integer", "multipleOf": 3}, "4"),
    ({"type": "string", "pattern": "^a+$"}, '"b"'),
    ({"type": "string", "format": "email"}, '"not an email"'),
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 1}, "[1, 2]"),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}, "{}"),
    ({"enum": ["a", "b"], "type": "string"}, '"c"'),
    ({"anyOf": [{"type": "integer"}, {"type": "null"}], "title": "x"}, '"s"'),
    ({"type": "string", "maxLength": 3}, '"abcd"'),
    # The rewrite of string lengths as patterns keeps control characters out (valid JSON).
    ({"type": "string", "maxLength": 6}, '"a\u0000"'),
]


def _accepts(compiler: GrammarCompiler, schema: dict[str, Any], text: str) -> bool:
    import xgrammar

    grammar = xgrammar.Grammar.from_json_schema(
        json.dumps(enforceable_form(schema)), any_whitespace=False
    )
    matcher = xgrammar.GrammarMatcher(
        compiler._compiler.compile_grammar(grammar), terminate_without_stop_token=True
    )
    return bool(matcher.accept_string(text)) and bool(matcher.is_terminated())


@pytest.mark.parametrize(
    ("keyword", "schema", "violating"), UNENFORCED, ids=[u[0] for u in UNENFORCED]
)
def test_refused_keywords_are_the_ones_xgrammar_ignores(
    compiler: GrammarCompiler, keyword: str, schema: dict[str, Any], violating: str
) -> None:
    with pytest.raises(UnenforceableSchemaError) as caught:
        check_enforceable(schema)
    assert caught.value.keyword == keyword
    assert _accepts(compiler, schema, violating), f"xgrammar now enforces {keyword}: allow it"


@pytest.mark.parametrize(("schema", "violating"), ENFORCED)
def test_kept_keywords_are_enforced(
    compiler: GrammarCompiler, schema: dict[str, Any], violating: str
) -> None:
    check_enforceable(schema)
    assert not _accepts(compiler, schema, violating)


def test_a_nested_keyword_is_named_with_its_place() -> None:
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "uniqueItems": True}},
        "$defs": {"x": {"not": {}}},
    }
    with pytest.raises(UnenforceableSchemaError, match="'uniqueItems' at /properties/tags"):
        check_enforceable(schema)


def test_pydantic_style_schemas_pass() -> None:
    schema = {
        "$defs": {"Kind": {"enum": ["a", "b"], "title": "Kind", "type": "string"}},
        "properties": {
            "kind": {"$ref": "#/$defs/Kind", "description": "which"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "count": {"type": "integer", "minimum": 0, "title": "Count"},
        },
        "required": ["kind", "count"],
        "title": "Thing",
        "type": "object",
    }
    check_enforceable(schema)


async def test_compile_names_the_refused_keyword(compiler: GrammarCompiler) -> None:
    spec = GrammarSpec("json_schema", json.dumps({"type": "array", "uniqueItems": True}))
    with pytest.raises(ConstraintError) as caught:
        await compiler.compile(spec)
    assert caught.value.keyword == "uniqueItems"
    assert not compiler.cached(spec)


async def test_the_executor_guide_is_the_same_grammar(compiler: GrammarCompiler) -> None:
    """TensorRT-LLM gets the JSON grammar as EBNF text; it must accept what the torch engine's
    compiled grammar accepts and refuse what it refuses."""
    import xgrammar

    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 9}}}
    constraint: CompiledConstraint = await compiler.compile(
        GrammarSpec("json_schema", json.dumps(schema))
    )
    assert constraint.guide.guide_type == "EBNF_GRAMMAR"
    from_guide = compiler._compiler.compile_grammar(constraint.guide.guide)
    for text, valid in (('{"n": 7}', True), ('{"n": 10}', False), ('{ "n":7}', False)):
        for grammar in (constraint.grammar, from_guide):
            matcher = xgrammar.GrammarMatcher(grammar, terminate_without_stop_token=True)
            assert (matcher.accept_string(text) and matcher.is_terminated()) == valid
