"""The grammar of a choice that may call tools: an xgrammar structural tag built from the model's
`CallSyntax` and the request's `ToolUse`.

- tool_choice "required" / a named function: the output is calls and nothing else, valid from
  its first token (a named function: exactly one call of it).
- "auto": free text until the model writes its call trigger (Mistral's [TOOL_CALLS] token,
  `<tool_call>` for the others); from there on only valid calls.
- parallel_tool_calls false: at most one call.
Each call's arguments follow the function's parameters schema.

Structural tag formats as xgrammar 0.2.9 defines them (xgrammar/structural_tag.py: TagFormat
:180-211, TriggeredTagsFormat :214-267, TokenTriggeredTagsFormat :270-289,
TagsWithSeparatorFormat :292-327, TokenFormat :100-107, SequenceFormat :162-168).
"""

from __future__ import annotations

import json
from typing import Any

from inference.grammar import GrammarSpec
from inference.text.messages import FunctionTool
from inference.text.tool_format import CALL_CLOSE, CALL_NAME_END, CALL_OPEN, CallSyntax
from inference.tool_request import ToolUse


def tool_call_grammar(syntax: CallSyntax, use: ToolUse) -> GrammarSpec | None:
    """The structural tag for `use`; None when the output is not constrained (choice "none")."""
    tools = use.callable_tools
    if not tools:
        return None
    forced = use.choice != "auto"
    one_call = not use.parallel or use.choice == "function"
    if syntax.call_separator is None:
        tags = [
            _call_tag(tool, syntax.trigger + syntax.block_open, syntax.block_close)
            for tool in tools
        ]
        if forced:
            format_ = _tags_with_separator(tags, syntax.block_separator, one_call)
        else:
            format_ = {
                "type": "triggered_tags",
                "triggers": [syntax.trigger],
                "tags": tags,
                "stop_after_first": one_call,
            }
    else:
        calls = _tags_with_separator(
            [_call_tag(tool, "", "") for tool in tools], syntax.call_separator, one_call
        )
        trigger = _trigger(syntax)
        if forced:
            format_ = _sequence(
                trigger, _const(syntax.block_open), calls, _const(syntax.block_close)
            )
        else:
            block = {
                "type": "tag",
                "begin": trigger,
                "content": _sequence(_const(syntax.block_open), calls),
                "end": syntax.block_close,
            }
            # One block holds all the calls, so the output ends after it.
            format_ = {
                "type": "token_triggered_tags",
                "trigger_tokens": [trigger["token"]],
                "tags": [block],
                "stop_after_first": True,
            }
    return GrammarSpec("structural_tag", json.dumps({"type": "structural_tag", "format": format_}))


def arguments_schema(tool: FunctionTool) -> dict[str, Any]:
    """The parameters schema, an object even where the request left the type out."""
    return {"type": "object", **tool.parameters}


def _call_tag(tool: FunctionTool, before: str, after: str) -> dict[str, Any]:
    return {
        "type": "tag",
        "begin": before + CALL_OPEN + tool.name + CALL_NAME_END,
        "content": {"type": "json_schema", "json_schema": arguments_schema(tool)},
        "end": CALL_CLOSE + after,
    }


def _tags_with_separator(tags: list[dict[str, Any]], separator: str, one: bool) -> dict[str, Any]:
    return {
        "type": "tags_with_separator",
        "tags": tags,
        "separator": separator,
        "at_least_one": True,
        "stop_after_first": one,
    }


def _trigger(syntax: CallSyntax) -> dict[str, Any]:
    if syntax.trigger_token is None:
        raise ValueError("a format with calls in one list needs a trigger token")
    return {"type": "token", "token": syntax.trigger_token}


def _const(value: str) -> dict[str, Any]:
    return {"type": "const_string", "value": value}


def _sequence(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "sequence", "elements": list(elements)}
