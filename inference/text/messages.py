"""The conversation types the text layer renders into prompts: messages, tool calls, tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The roles a conversation may hold, in the order the error message lists them.
CHAT_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call an assistant turn made, as the client sends it back in the history."""

    id: str  # the id the server returned; mapped to the model's id format when rendered
    name: str
    arguments: dict[str, Any]  # the parsed JSON arguments object


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A function the model may call."""

    name: str
    description: str = ""
    # The arguments' JSON Schema; {} when the request gave none (any object).
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # one of CHAT_ROLES
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # role "assistant"
    tool_call_id: str = ""  # role "tool": the ToolCall.id it answers
    name: str = ""  # role "tool": the function that answered (optional)
