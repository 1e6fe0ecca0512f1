"""A request's tools and tool history, validated: what the model may call, and how.

Every refusal names the OpenAI parameter at fault (`tools[1].function.name`, `tool_choice`,
`messages[3].tool_call_id`, ...), so the facade can pass it through unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from inference.errors import invalid
from inference.grammar.schema_policy import UnenforceableSchemaError, check_enforceable
from inference.text.messages import CHAT_ROLES, ChatMessage, FunctionTool, ToolCall
from tensorchat.limits import MAX_SCHEMA_CHARS, MAX_TOOLS
from tensorchat.v1 import inference_pb2 as pb

# A description's length in characters: a bound on prompt size per tool (the prompt's context
# limit bounds the whole list; MAX_SCHEMA_CHARS bounds each schema, as the facade does).
MAX_DESCRIPTION_CHARS = 32_768
# OpenAI's function names: 1-64 letters, digits, "_" and "-".
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

ToolChoiceMode = Literal["auto", "none", "required", "function"]
_MODES: dict[int, ToolChoiceMode] = {
    pb.TOOL_CHOICE_MODE_AUTO: "auto",
    pb.TOOL_CHOICE_MODE_NONE: "none",
    pb.TOOL_CHOICE_MODE_REQUIRED: "required",
    pb.TOOL_CHOICE_MODE_FUNCTION: "function",
}


@dataclass(frozen=True, slots=True)
class ToolUse:
    """The tools shown to the model and what it must do with them."""

    tools: tuple[FunctionTool, ...]
    choice: ToolChoiceMode
    function_name: str  # choice "function": the one it must call
    parallel: bool  # False: at most one call per choice

    @property
    def callable_tools(self) -> tuple[FunctionTool, ...]:
        """The tools the output may call (all but for a named function; none for "none")."""
        if self.choice == "none":
            return ()
        if self.choice == "function":
            return tuple(t for t in self.tools if t.name == self.function_name)
        return self.tools


def tool_use(request: pb.GenerateRequest) -> ToolUse | None:
    """The request's validated tools (None when it has none and calls nothing)."""
    if not request.HasField("tools"):
        return None
    spec = request.tools
    if len(spec.tools) > MAX_TOOLS:
        raise invalid("tools", f"at most {MAX_TOOLS} tools, got {len(spec.tools)}")
    tools = tuple(_tool(i, tool) for i, tool in enumerate(spec.tools))
    names = [t.name for t in tools]
    duplicate = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if duplicate is not None:
        raise invalid("tools", f"function names must be unique; {duplicate!r} is repeated")
    choice = _MODES.get(spec.choice.mode)
    if choice is None:
        raise invalid("tool_choice", f"unknown mode {spec.choice.mode}")
    if choice in ("required", "function") and not tools:
        raise invalid("tool_choice", f"{choice!r} needs at least one tool in tools")
    function_name = spec.choice.function_name if choice == "function" else ""
    if choice == "function" and function_name not in names:
        raise invalid("tool_choice", f"function {function_name!r} is not one of the tools")
    if not tools and choice == "auto":
        return None
    parallel = spec.parallel_tool_calls if spec.HasField("parallel_tool_calls") else True
    return ToolUse(tools, choice, function_name, parallel)


def _tool(index: int, tool: pb.Tool) -> FunctionTool:
    param = f"tools[{index}].function"
    if not FUNCTION_NAME.fullmatch(tool.name):
        raise invalid(
            f"{param}.name",
            f"must be 1 to 64 letters, digits, underscores or dashes, got {tool.name!r}",
        )
    if len(tool.description) > MAX_DESCRIPTION_CHARS:
        raise invalid(
            f"{param}.description",
            f"must be at most {MAX_DESCRIPTION_CHARS} characters, got {len(tool.description)}",
        )
    if len(tool.parameters) > MAX_SCHEMA_CHARS:
        raise invalid(
            f"{param}.parameters",
            f"must be at most {MAX_SCHEMA_CHARS} characters of JSON, got {len(tool.parameters)}",
        )
    parameters = _json_object(f"{param}.parameters", tool.parameters or "{}")
    if parameters.get("type", "object") != "object":
        raise invalid(f"{param}.parameters", "must be the JSON Schema of an object")
    try:
        check_enforceable(parameters)
    except UnenforceableSchemaError as error:
        raise invalid(f"{param}.parameters", str(error)) from None
    return FunctionTool(tool.name, tool.description, parameters)


def chat_messages(messages: Sequence[pb.ChatMessage]) -> list[ChatMessage]:
    """The conversation, with tool calls parsed and every tool result matched to its call."""
    if not messages:
        raise invalid("messages", "must contain at least one message")
    call_ids: set[str] = set()
    out = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if message.role not in CHAT_ROLES:
            raise invalid(
                f"{param}.role", f"must be one of {', '.join(CHAT_ROLES)}, got {message.role!r}"
            )
        calls: tuple[ToolCall, ...] = ()
        if message.tool_calls:  # most messages have none: no generators for them
            if message.role != "assistant":
                raise invalid(f"{param}.tool_calls", "only assistant messages make tool calls")
            calls = tuple(
                _history_call(f"{param}.tool_calls[{j}]", c)
                for j, c in enumerate(message.tool_calls)
            )
            call_ids.update(c.id for c in calls)
        if message.role == "tool":
            if not message.tool_call_id:
                raise invalid(f"{param}.tool_call_id", "is required for role 'tool'")
            if message.tool_call_id not in call_ids:
                raise invalid(
                    f"{param}.tool_call_id",
                    f"{message.tool_call_id!r} answers no tool call of an earlier message",
                )
        elif message.tool_call_id:
            raise invalid(f"{param}.tool_call_id", "is only for role 'tool'")
        out.append(
            ChatMessage(
                message.role,
                message.content,
                tool_calls=calls,
                tool_call_id=message.tool_call_id,
                name=message.name,
            )
        )
    return out


def _history_call(param: str, call: pb.ToolCall) -> ToolCall:
    if not call.id:
        raise invalid(f"{param}.id", "is required")
    if not call.name:
        raise invalid(f"{param}.function.name", "is required")
    arguments = _json_object(f"{param}.function.arguments", call.arguments or "{}")
    return ToolCall(call.id, call.name, arguments)


def _json_object(param: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise invalid(param, f"must be JSON: {error}") from None
    if not isinstance(value, dict):
        raise invalid(param, "must be a JSON object")
    return value
