"""The grammar of a choice that may call tools: an xgrammar structural tag built from the model's
`CallSyntax` and the request's `ToolUse`.

- tool_choice "required" / a named function: the output is calls and nothing else, valid from
  its first token (a named function: exactly one call of it).
- "auto": free text until the model writes its call trigger (Mistral's [TOOL_CALLS] token,
  `<tool_call>` for the others); from there on only valid calls.
- parallel_tool_calls false: at most one call.
Each call's arguments follow the function's parameters schema.

Only structural tag formats that both the torch engine's xgrammar (0.2.9) and the one TensorRT-LLM
1.2.1's executor links (v0.1.32: 3rdparty/fetch_content.json names tag v0.1.32) parse: "tag",
"triggered_tags", "tags_with_separator", "json_schema" (xgrammar v0.1.32, commit 62e13551,
python/xgrammar/structural_tag.py: TagFormat :123-154, TriggeredTagsFormat :157-206,
TagsWithSeparatorFormat :210-244; parsed by cpp/structural_tag.cc ParseFormat :105-130). Not
0.2's token-level formats (TokenFormat, TokenTriggeredTagsFormat: xgrammar PR #560, after
v0.1.32), and no "sequence" whose calls list is followed by anything: v0.1.32 refuses a
sequence with an unbounded element before its last ("Only the last element in a sequence can
be unlimited"), so Mistral's closing "]" is the end of a tag around the list.
tests/unit/text/test_tool_calls.py compiles every shape on the installed xgrammar.
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
            format_ = _triggered(syntax.trigger, tags, one_call)
    else:
        calls = _tags_with_separator(
            [_call_tag(tool, "", "") for tool in tools], syntax.call_separator, one_call
        )
        # One block holds all the calls, so the output ends after it. The trigger is matched
        # as text: a control token (Mistral's [TOOL_CALLS]) is its text to xgrammar, and the
        # executor's xgrammar (0.1.32) has no token-level formats.
        block = _tag(syntax.trigger + syntax.block_open, calls, syntax.block_close)
        format_ = block if forced else _triggered(syntax.trigger, [block], True)
    return GrammarSpec("structural_tag", json.dumps({"type": "structural_tag", "format": format_}))


def arguments_schema(tool: FunctionTool) -> dict[str, Any]:
    """The parameters schema, an object even where the request left the type out."""
    return {"type": "object", **tool.parameters}


def _call_tag(tool: FunctionTool, before: str, after: str) -> dict[str, Any]:
    # The arguments compile compact (inference/grammar/compiler.py) like every JSON output.
    arguments = {"type": "json_schema", "json_schema": arguments_schema(tool)}
    return _tag(before + CALL_OPEN + tool.name + CALL_NAME_END, arguments, CALL_CLOSE + after)


def _tag(begin: str, content: dict[str, Any], end: str) -> dict[str, Any]:
    return {"type": "tag", "begin": begin, "content": content, "end": end}


def _triggered(trigger: str, tags: list[dict[str, Any]], one: bool) -> dict[str, Any]:
    """Free text until `trigger`, then one of `tags` (each begins with it)."""
    return {"type": "triggered_tags", "triggers": [trigger], "tags": tags, "stop_after_first": one}


def _tags_with_separator(tags: list[dict[str, Any]], separator: str, one: bool) -> dict[str, Any]:
    return {
        "type": "tags_with_separator",
        "tags": tags,
        "separator": separator,
        "at_least_one": True,
        "stop_after_first": one,
    }
