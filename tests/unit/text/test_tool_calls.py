"""Tool calls on the output side: the grammar each format gets (checked with xgrammar's matcher
on the real tokenizers), and the parser that turns the constrained text into ToolCallDeltas."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence
from typing import Any

import jsonschema
import pytest
import torch
import xgrammar as xgr

from inference.grammar import GrammarCompiler
from inference.text import FunctionTool, ModelTokenizer
from inference.text.tool_format import GenericToolFormat, ToolFormat
from inference.tool_call_parser import ToolCallParser
from inference.tool_grammar import arguments_schema, tool_call_grammar
from inference.tool_request import ToolUse
from tensorchat.v1 import inference_pb2 as pb

WEATHER = FunctionTool(
    "get_weather",
    "The weather in a city.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "unit": {"enum": ["C", "F"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
)
CLOCK = FunctionTool(
    "get_time", "", {"properties": {"zone": {"type": "integer"}}, "required": ["zone"]}
)
TOOLS = (WEATHER, CLOCK)


@pytest.fixture(scope="module")
def formats(mistral_tokenizer: ModelTokenizer, qwen2_tokenizer: ModelTokenizer) -> dict[str, Any]:
    """name -> (tokenizer, tool format) for the three formats."""
    return {
        "mistral": (mistral_tokenizer, mistral_tokenizer.tool_format),
        "qwen": (qwen2_tokenizer, qwen2_tokenizer.tool_format),
        "generic": (qwen2_tokenizer, GenericToolFormat()),
    }


_COMPILERS: dict[int, GrammarCompiler] = {}


def compiled(tok: ModelTokenizer, tool_format: ToolFormat, use: ToolUse) -> xgr.CompiledGrammar:
    """The tool grammar as the service compiles it (inference/grammar: compact JSON)."""
    if id(tok) not in _COMPILERS:
        _COMPILERS[id(tok)] = GrammarCompiler(
            tok.hf, vocab_size=tok.vocab_size, stop_token_ids=tok.eos_token_ids
        )
    spec = tool_call_grammar(tool_format.syntax, use)
    assert spec is not None and spec.kind == "structural_tag"
    return asyncio.run(_COMPILERS[id(tok)].compile(spec)).grammar


def call_text(
    tool_format: ToolFormat, calls: Sequence[tuple[str, dict[str, Any]]], forced: bool
) -> tuple[bool, str]:
    """(starts with the trigger token, text) of `calls` written in the format's syntax."""
    s = tool_format.syntax
    bodies = [json.dumps({"name": name, "arguments": args}) for name, args in calls]
    if s.call_separator is not None:
        return True, s.block_open + s.call_separator.join(bodies) + s.block_close
    blocks = [s.trigger + s.block_open + body + s.block_close for body in bodies]
    return False, (s.block_separator if forced else "").join(blocks)


def accepts(
    tok: ModelTokenizer,
    tool_format: ToolFormat,
    use: ToolUse,
    prefix: str,
    calls: Any,
    suffix: str = "",
    spacing: Callable[[str], str] = lambda text: text,
) -> bool:
    """Whether the grammar takes `prefix`, then `calls` (their text passed through `spacing`),
    then `suffix`, then the end."""
    matcher = xgr.GrammarMatcher(compiled(tok, tool_format, use))
    token_start, text = call_text(tool_format, calls, use.choice != "auto")
    text = spacing(text)
    # Free text goes in as tokens: in Mistral's format it is matched token by token.
    if not all(matcher.accept_token(t) for t in tok.hf.encode(prefix, add_special_tokens=False)):
        return False
    trigger = tool_format.syntax.trigger_token
    if token_start and not (trigger is not None and matcher.accept_token(trigger)):
        return False
    if not matcher.accept_string(text + suffix):
        return False
    return bool(matcher.accept_token(min(tok.eos_token_ids)) and matcher.is_terminated())


PARIS = ("get_weather", {"city": "Paris", "unit": "C"})
ZONE = ("get_time", {"zone": 2})


@pytest.mark.parametrize("name", ["mistral", "qwen", "generic"])
def test_required_forces_valid_calls_from_the_first_token(
    formats: dict[str, Any], name: str
) -> None:
    tok, tool_format = formats[name]
    use = ToolUse(TOOLS, "required", "", parallel=True)
    assert accepts(tok, tool_format, use, "", [PARIS])
    assert accepts(tok, tool_format, use, "", [PARIS, ZONE])
    assert not accepts(tok, tool_format, use, "Sure. ", [PARIS])  # no text first
    assert not accepts(tok, tool_format, use, "", [])  # at least one call
    assert not accepts(tok, tool_format, use, "", [("get_stock", {"city": "Paris", "unit": "C"})])
    assert not accepts(tok, tool_format, use, "", [("get_weather", {"city": "Paris"})])
    assert not accepts(tok, tool_format, use, "", [("get_weather", {"city": "Paris", "unit": "K"})])
    assert not accepts(tok, tool_format, use, "", [("get_time", {"zone": "2"})])
    single = ToolUse(TOOLS, "required", "", parallel=False)
    assert accepts(tok, tool_format, single, "", [ZONE])
    assert not accepts(tok, tool_format, single, "", [PARIS, ZONE])


@pytest.mark.parametrize("name", ["mistral", "qwen", "generic"])
def test_named_function_is_the_only_call(formats: dict[str, Any], name: str) -> None:
    tok, tool_format = formats[name]
    use = ToolUse(TOOLS, "function", "get_time", parallel=True)
    assert accepts(tok, tool_format, use, "", [ZONE])
    assert not accepts(tok, tool_format, use, "", [PARIS])
    assert not accepts(tok, tool_format, use, "", [ZONE, ZONE])


@pytest.mark.parametrize("name", ["mistral", "qwen", "generic"])
def test_auto_allows_text_then_only_valid_calls(formats: dict[str, Any], name: str) -> None:
    tok, tool_format = formats[name]
    use = ToolUse(TOOLS, "auto", "", parallel=True)
    matcher = xgr.GrammarMatcher(compiled(tok, tool_format, use))
    text = tok.hf.encode("Just text, no calls.", add_special_tokens=False)
    assert all(matcher.accept_token(t) for t in text)
    assert matcher.accept_token(min(tok.eos_token_ids))
    assert accepts(tok, tool_format, use, "Let me look.\n", [PARIS])
    assert not accepts(tok, tool_format, use, "Let me look.\n", [("get_stock", {})])
    assert not accepts(tok, tool_format, use, "Let me look.\n", [("get_time", {"zone": None})])
    assert tool_call_grammar(tool_format.syntax, ToolUse(TOOLS, "none", "", True)) is None


@pytest.mark.parametrize("name", ["mistral", "qwen", "generic"])
def test_arguments_are_compact_json(formats: dict[str, Any], name: str) -> None:
    """Whitespace inside the arguments only as json.dumps writes it: a random-weight model
    given any whitespace loops on it until max_tokens."""
    tok, tool_format = formats[name]
    use = ToolUse(TOOLS, "required", "", parallel=True)
    assert accepts(tok, tool_format, use, "", [PARIS])
    for loose in ('{ "city"', '"city":  "', '"Paris" ,', '"C"\n}'):
        compact = loose.replace(" ,", ",").replace("{ ", "{").replace(":  ", ": ")
        compact = compact.replace("\n", "")

        def spaced(text: str, loose: str = loose, compact: str = compact) -> str:
            assert compact in text
            return text.replace(compact, loose)

        assert not accepts(tok, tool_format, use, "", [PARIS], spacing=spaced), loose


def _format_types(node: Any) -> set[str]:
    """The structural tag format types a tool grammar uses."""
    if isinstance(node, list):
        return set().union(*(_format_types(item) for item in node))
    if not isinstance(node, dict):
        return set()
    found = {node["type"]}
    for key in ("format", "content", "elements", "tags"):
        if key in node:
            found |= _format_types(node[key])
    return found


@pytest.mark.parametrize("name", ["mistral", "qwen", "generic"])
@pytest.mark.parametrize("choice", ["required", "function", "auto"])
@pytest.mark.parametrize("parallel", [True, False])
def test_grammar_uses_formats_the_executor_xgrammar_parses(
    formats: dict[str, Any], name: str, choice: str, parallel: bool
) -> None:
    """TensorRT-LLM 1.2.1's executor compiles the guide with xgrammar v0.1.32, which has no
    token-level formats and no unbounded element before a sequence's last (tool_grammar.py)."""
    _, tool_format = formats[name]
    use = ToolUse(TOOLS, choice, "get_time" if choice == "function" else "", parallel)  # type: ignore[arg-type]
    spec = tool_call_grammar(tool_format.syntax, use)
    assert spec is not None
    used = _format_types(json.loads(spec.source))
    assert used <= {"structural_tag", "tag", "triggered_tags", "tags_with_separator", "json_schema"}


# -- parser ------------------------------------------------------------------------------


def parse(
    tool_format: ToolFormat, pieces: Sequence[str | int]
) -> tuple[str, list[pb.ToolCallDelta]]:
    """Feeds text pieces (and the trigger token, as an int) to a parser; ids are "id0", ..."""
    ids = iter(f"id{i}" for i in range(100))
    parser = ToolCallParser(tool_format.syntax, lambda: next(ids))
    text, deltas = [], []
    for piece in pieces:
        out = parser.push_trigger_token() if isinstance(piece, int) else parser.push(piece)
        text.append(out[0])
        deltas += out[1]
    out = parser.finish()
    return "".join([*text, out[0]]), [*deltas, *out[1]]


def reassembled(deltas: list[pb.ToolCallDelta]) -> list[tuple[str, str, str]]:
    """(id, name, arguments) per call, checking the OpenAI stream shape on the way."""
    calls: list[list[str]] = []
    for d in deltas:
        if d.id:
            assert d.index == len(calls) and d.name and d.arguments == ""
            calls.append([d.id, d.name, ""])
        else:
            assert d.index == len(calls) - 1 and not d.name
            calls[-1][2] += d.arguments
    return [(i, n, a) for i, n, a in calls]


def chunkings(text: str, rnd: random.Random) -> list[list[str]]:
    """Every 1- and 2-piece split, plus random splits."""
    out = [[text], list(text)] + [[text[:k], text[k:]] for k in range(1, len(text))]
    for _ in range(20):
        cuts = sorted(rnd.sample(range(1, len(text)), min(5, len(text) - 1)))
        out.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])
    return out


@pytest.mark.parametrize("name", ["mistral", "qwen", "generic"])
@pytest.mark.parametrize("prefix", ["", "Let me check the weather.\n"])
def test_parser_streams_calls_and_keeps_them_out_of_the_text(
    formats: dict[str, Any], name: str, prefix: str
) -> None:
    _, tool_format = formats[name]
    calls: list[tuple[str, dict[str, Any]]] = [
        PARIS,
        ("get_time", {"zone": 2, "note": 'a "quoted" {brace} \\ ]'}),
    ]
    token_start, body = call_text(tool_format, calls, forced=not prefix)
    expected = [(f"id{i}", n, json.dumps(a)) for i, (n, a) in enumerate(calls)]
    rnd = random.Random(7)
    for pieces in chunkings(body, rnd):
        stream: list[str | int] = [prefix] if prefix else []
        if token_start:
            stream.append(tool_format.syntax.trigger_token)
        text, deltas = parse(tool_format, [*stream, *pieces])
        assert text == prefix.rstrip(), pieces
        assert reassembled(deltas) == expected, pieces


def test_parser_passes_text_without_calls_through(formats: dict[str, Any]) -> None:
    for name in ("mistral", "qwen"):
        _, tool_format = formats[name]
        for pieces in chunkings("a <tool reply> 1 < 2\n\n", random.Random(1)):
            text, deltas = parse(tool_format, pieces)
            assert (text, deltas) == ("a <tool reply> 1 < 2\n\n", [])


def test_mistral_first_token_without_its_space(formats: dict[str, Any]) -> None:
    # A detokenizer drops the word-boundary space of a sequence's first text token.
    _, tool_format = formats["mistral"]
    text, deltas = parse(tool_format, [5, '[{"name": "get_time", "arguments": {"zone": 1}}]'])
    assert text == "" and reassembled(deltas) == [("id0", "get_time", '{"zone": 1}')]


# -- grammar and parser together, on sampled outputs --------------------------------------


def allowed_ids(matcher: xgr.GrammarMatcher, vocab: int) -> torch.Tensor:
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    matcher.fill_next_token_bitmask(bitmask)
    bits = (bitmask[0].unsqueeze(1) >> torch.arange(32, dtype=torch.int32)) & 1
    return bits.flatten()[:vocab].nonzero().flatten()


@pytest.mark.parametrize("name", ["mistral", "qwen", "generic"])
@pytest.mark.parametrize("choice", ["required", "function", "auto"])
def test_sampled_outputs_are_valid_calls(formats: dict[str, Any], name: str, choice: str) -> None:
    """Tokens drawn at random among those the grammar allows (a random-weight model) always
    parse into calls whose arguments validate, and the text outside calls stays text."""
    tok, tool_format = formats[name]
    use = ToolUse(TOOLS, choice, "get_weather" if choice == "function" else "", parallel=True)  # type: ignore[arg-type]
    grammar = compiled(tok, tool_format, use)
    eos = min(tok.eos_token_ids)
    # Short tokens that close strings and objects, so random walks end in reasonable time.
    closers = {
        i
        for s in ['"', "}", "]", ",", "C", "1", '"}', "}}"]
        for i in tok.hf.encode(s, add_special_tokens=False)
    }
    # Whitespace tokens (where the grammar allows them, in strings) would be most of a walk.
    blank = {i for i in range(tok.vocab_size) if not tok.token_text(i).strip()} - {eos}
    rnd = random.Random(f"{name}-{choice}")
    schemas = {t.name: arguments_schema(t) for t in TOOLS}
    for sample in range(3):
        matcher = xgr.GrammarMatcher(grammar)
        ids: list[int] = []
        if choice == "auto":  # some text, then the marker a model would write
            prefix = tok.hf.encode("Checking. ", add_special_tokens=False)
            marker = (
                [tool_format.syntax.trigger_token]
                if tool_format.syntax.trigger_token
                else tok.hf.encode(tool_format.syntax.trigger, add_special_tokens=False)
            )
            for t in [*prefix, *marker]:
                assert matcher.accept_token(t)
                ids.append(t)
        for _ in range(400):
            if matcher.is_terminated():
                break
            allowed = allowed_ids(matcher, tok.vocab_size).tolist()
            preferred = [t for t in allowed if t in closers]
            visible = [t for t in allowed if t not in blank] or allowed
            token = rnd.choice(preferred if preferred and rnd.random() < 0.8 else visible)
            if eos in allowed and tool_format.syntax.block_close in tok.hf.decode(ids):
                token = eos  # auto: after a call, free text again; the walk ends there
            assert matcher.accept_token(token)
            if token != eos:
                ids.append(token)
        assert matcher.is_terminated(), (sample, tok.hf.decode(ids))
        parser = ToolCallParser(tool_format.syntax, lambda: "x")
        detokenizer = tok.new_detokenizer()
        assembled_text, deltas = "", []
        for t in ids:  # token by token, like the stream
            if t == tool_format.syntax.trigger_token:
                piece = parser.push_trigger_token()
            else:
                piece = parser.push(detokenizer.push([t]))
            assembled_text += piece[0]
            deltas += piece[1]
        piece = parser.push(detokenizer.flush())
        assembled_text += piece[0]
        deltas += piece[1]
        assembled_text += parser.finish()[0]
        calls = reassembled(deltas)
        assert calls, tok.hf.decode(ids)
        for _, function, arguments in calls:
            jsonschema.validate(json.loads(arguments), schemas[function])
            if choice == "function":
                assert function == "get_weather"
        if choice == "auto":  # text may follow a call (a token can end the call and go on)
            assert assembled_text.startswith("Checking."), assembled_text
            assert "tool_call>" not in assembled_text and "arguments" not in assembled_text
        else:
            assert assembled_text == ""
