"""Rules across fields for tools, legacy functions and response_format: the 400s the facade can
decide before the service sees the request.

The schema (facade/schemas.py) checks each field on its own; this module checks how they fit
together: tool_choice must name an offered function, every tool result must answer a call of
the assistant message right before it (and every call must be answered), a request offers
tools or legacy functions, not both. Schemas themselves (an unsupported keyword, an invalid
schema) are the service's to judge: it compiles them, and its INVALID_ARGUMENT names the
parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from facade.errors import APIError
from facade.schemas import ChatCompletionRequest, ChatMessage, FunctionDefinition

# The roles of a tool's answer: "function" is the legacy one (with `functions`).
RESULT_ROLES = frozenset({"tool", "function"})


@dataclass(frozen=True, slots=True)
class CallRef:
    """The call a tool message answers: its id (as the server returned it) and function."""

    id: str
    name: str


def check_tool_fields(req: ChatCompletionRequest) -> None:
    """Raises the APIError (400, naming the parameter) for the first rule the request breaks."""
    if req.tools and req.functions:
        raise _invalid("functions", "Use either 'tools' or the legacy 'functions', not both.")
    if req.tool_choice is not None and req.function_call is not None:
        message = "Use either 'tool_choice' or the legacy 'function_call', not both."
        raise _invalid("function_call", message)
    functions = offered_functions(req)
    _check_unique_names(functions, "functions" if req.functions else "tools")
    _check_choice(req, {f.name for f in functions})
    kind = req.response_format.type if req.response_format else "text"
    check_format_with_tools(bool(functions), kind, "response_format")
    if has_tool_history(req.messages):
        answered_calls(req.messages)


def check_format_with_tools(has_tools: bool, kind: str, param: str) -> None:
    """An output format other than text next to tools is a 400 naming `param` (the chat and
    the Responses API spell the format differently)."""
    if has_tools and kind != "text":
        # The protocol's OutputConstraint is incompatible with Tools: one grammar per choice.
        raise _invalid(
            param,
            f"Invalid '{param}': '{kind}' cannot be combined with tools (a choice "
            "either calls functions or answers in the format); offer the format as a tool.",
        )


def has_tool_history(messages: Sequence[ChatMessage]) -> bool:
    """Whether any message made calls or answers one (most conversations: no)."""
    return any(m.role in RESULT_ROLES or m.tool_calls or m.function_call for m in messages)


def offered_functions(req: ChatCompletionRequest) -> list[FunctionDefinition]:
    """The functions the model may call, from `tools` or the legacy `functions`."""
    if req.functions:
        return req.functions
    return [tool.function for tool in req.tools or []]


def legacy_call_id(message_index: int) -> str:
    """The id of a legacy `function_call` (OpenAI gave those none): one per assistant message,
    the same on every turn, so the service maps it to the model's id format consistently."""
    return f"call_legacy{message_index}"


def call_ids(message: ChatMessage, index: int) -> list[str]:
    """The ids of the calls an assistant message (at `index` in the history) made."""
    if message.tool_calls:
        return [call.id for call in message.tool_calls]
    return [legacy_call_id(index)] if message.function_call else []


def answered_calls(messages: Sequence[ChatMessage]) -> list[CallRef | None]:
    """For each message, the call it answers (tool and function messages), else None.

    OpenAI's rule, which every model's tool format assumes: the results of an assistant
    message's calls come right after it, one per call, before any other message.
    """
    refs: list[CallRef | None] = []
    pending: dict[str, str] = {}  # id -> function name, of calls not answered yet
    calls_at = -1  # index of the assistant message that made the pending calls
    for i, message in enumerate(messages):
        if message.role in RESULT_ROLES:
            refs.append(_answer(message, i, pending))
            continue
        _check_answered(pending, calls_at)
        refs.append(None)
        ids = call_ids(message, i)
        if ids:
            if len(set(ids)) != len(ids):
                raise _invalid(f"messages[{i}].tool_calls", "Tool call ids must be unique.")
            pending = {id_: call.name for id_, call in zip(ids, message.calls, strict=True)}
            calls_at = i
    _check_answered(pending, calls_at)
    return refs


def _answer(message: ChatMessage, index: int, pending: dict[str, str]) -> CallRef:
    if message.role == "function":
        # Legacy: a function message answers the one function_call before it, by name.
        if not message.name:
            param = f"messages[{index}].name"
            raise _invalid(param, f"Missing required parameter: '{param}'.")
        call_id = next((i for i, name in pending.items() if name == message.name), None)
        if call_id is None:
            raise _invalid(
                f"messages[{index}].name",
                "Messages with role 'function' must answer the 'function_call' of the "
                "assistant message before them.",
            )
    else:
        if message.tool_call_id is None:
            param = f"messages[{index}].tool_call_id"
            raise _invalid(param, f"Missing required parameter: '{param}'.")
        call_id = message.tool_call_id
        if call_id not in pending:
            raise _invalid(
                f"messages[{index}].tool_call_id",
                "Messages with role 'tool' must be a response to a preceding message with "
                f"'tool_calls', and no call there has the id {call_id!r} (or it was answered).",
            )
    return CallRef(call_id, pending.pop(call_id))


def _check_answered(pending: dict[str, str], calls_at: int) -> None:
    if pending:
        raise _invalid(
            f"messages[{calls_at}].tool_calls",
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(pending)}",
        )


def _check_unique_names(functions: Sequence[FunctionDefinition], param: str) -> None:
    seen: set[str] = set()
    for i, function in enumerate(functions):
        if function.name in seen:
            raise _invalid(
                f"{param}[{i}]", f"Function names must be unique: {function.name!r} repeats."
            )
        seen.add(function.name)


def _check_choice(req: ChatCompletionRequest, names: set[str]) -> None:
    param = req.choice_param
    mode, name = req.choice
    if mode in ("none", "auto"):
        return  # meaningful without tools too: no call is forced
    if not names:
        raise _invalid(param, f"'{param}' {mode!r} is only allowed when tools are specified.")
    if mode == "function" and name not in names:
        message = f"Invalid value for '{param}': no function named {name!r} among the tools."
        raise _invalid(param, message)


def _invalid(param: str, message: str) -> APIError:
    return APIError(400, message, param=param)
