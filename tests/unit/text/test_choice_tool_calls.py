"""A choice's tool calls as the stream carries them: ChoiceAssembler over engine token outputs."""

from __future__ import annotations

import json

import pytest

from inference.choices import ChoiceAssembler
from inference.engines.base import EngineFinish, SequenceOutput
from inference.text import ModelTokenizer
from inference.tool_call_parser import ToolCallParser
from tensorchat.v1 import inference_pb2 as pb

CALL = '{"name": "get_time", "arguments": {"zone": 2}}'


def outputs(ids: list[int], finish: EngineFinish) -> list[SequenceOutput]:
    """One output per token, the last one finishing."""
    return [
        SequenceOutput(index=0, token_ids=[t], finish=finish if k == len(ids) - 1 else None)
        for k, t in enumerate(ids)
    ]


def run(
    tok: ModelTokenizer, ids: list[int], finish: EngineFinish
) -> tuple[str, list[pb.ToolCallDelta], pb.Finished]:
    tool_format = tok.tool_format
    assembler = ChoiceAssembler(
        0,
        tok,
        prompt_tokens=3,
        stops=(),
        output=pb.OUTPUT_MODE_TEXT,
        logprobs=False,
        tool_calls=ToolCallParser(tool_format.syntax, tool_format.new_call_id),
    )
    text, finished = "", None
    calls: list[pb.ToolCallDelta] = []
    for output in outputs(ids, finish):
        delta, done = assembler.feed([output])
        if delta is not None:
            text += delta.text
            calls += delta.tool_calls
        finished = done or finished
    assert finished is not None
    return text, calls, finished


@pytest.mark.parametrize("model", ["mistral", "qwen2"])
def test_calls_stream_as_deltas_and_finish_as_tool_calls(
    request: pytest.FixtureRequest, model: str
) -> None:
    tok: ModelTokenizer = request.getfixturevalue(f"{model}_tokenizer")
    syntax = tok.tool_format.syntax
    text_ids = tok.hf.encode("Let me check.", add_special_tokens=False)
    if syntax.trigger_token is not None:
        call_ids = [syntax.trigger_token, *tok.hf.encode(f"[{CALL}]", add_special_tokens=False)]
    else:
        call_ids = tok.hf.encode(f"\n<tool_call>\n{CALL}\n</tool_call>", add_special_tokens=False)
    eos = min(tok.eos_token_ids)
    text, calls, finished = run(tok, [*text_ids, *call_ids, eos], EngineFinish.EOS)
    assert text == "Let me check."
    assert finished.reason == pb.FINISH_REASON_TOOL_CALLS
    first, *rest = calls
    assert (first.index, first.name, first.arguments) == (0, "get_time", "")
    # Server-made ids: 9 alphanumerics for Mistral (kept as they are in later prompts).
    assert first.id == tok.tool_format.history_call_id(first.id)
    assert len(first.id) == (9 if model == "mistral" else 29)
    assert all(d.index == 0 and not d.id and not d.name for d in rest)
    assert json.loads("".join(d.arguments for d in rest)) == {"zone": 2}
    assert len(rest) > 1  # arguments stream in fragments, token by token


def test_text_only_choice_keeps_its_finish(qwen2_tokenizer: ModelTokenizer) -> None:
    ids = qwen2_tokenizer.hf.encode("No calls <tool here.", add_special_tokens=False)
    text, calls, finished = run(qwen2_tokenizer, ids, EngineFinish.LENGTH)
    assert (text, calls, finished.reason) == ("No calls <tool here.", [], pb.FINISH_REASON_LENGTH)
