"""A Responses API request as the chat request it means, so that the chat route's mapping
(facade/translate.py) builds its GenerateRequest and the chat rules (facade/tool_rules.py)
judge its tools: one way to turn a conversation into a generation.

Items become chat messages: `instructions` a system message first, a message item a message
of its role, a `function_call` a call of the assistant message it follows (consecutive calls,
and the assistant text right before them, make one assistant turn, as the model produced
them), a `function_call_output` a tool message. OpenAI's rule for the history holds, in its
Responses wording: each call's output comes after the call and before the next turn, and
every call gets one. Refusals name the Responses parameter (`input[3].call_id`,
`text.format`, `max_output_tokens`); an item of the stored conversation that a
`previous_response_id` brought in is named by that parameter.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import PrivateAttr, TypeAdapter, ValidationError

from facade.errors import APIError
from facade.response_store import ResponseStore, StoreUnavailable
from facade.responses_schemas import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputItem,
    InputMessage,
    ResponsesRequest,
)
from facade.schemas import (
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    FunctionDefinition,
    FunctionName,
    FunctionTool,
    NamedToolChoice,
    ResponseFormat,
    ToolCall,
)
from facade.tool_rules import check_format_with_tools

Item = InputMessage | FunctionCallItem | FunctionCallOutputItem
_ITEMS: TypeAdapter[list[Item]] = TypeAdapter(list[InputItem])


class ResponsesAsChat(ChatCompletionRequest):
    """The chat request a Responses request means; refusals name the Responses parameters."""

    # The parameter each message came from (see `item_params`).
    _item_params: list[str] = PrivateAttr(default_factory=list)

    @property
    def completion_limit_param(self) -> str:
        return "max_output_tokens"

    @property
    def item_params(self) -> Sequence[str]:
        return self._item_params


def check_unsupported(req: ResponsesRequest, store: ResponseStore | None) -> bool:
    """Refuses what this server does not do (400 naming the parameter); returns whether the
    response is to be stored.

    Stateless without Redis: an explicit `store: true` or a `previous_response_id` is
    refused, but a request that leaves `store` out is answered without being stored (OpenAI's
    default is to store, and the SDKs send `store` only when the caller sets it).
    """
    if req.background:
        raise _invalid(
            "background", "Invalid 'background': background responses are not supported."
        )
    if req.conversation is not None:
        message = (
            "Invalid 'conversation': conversations are not supported; use 'previous_response_id'."
        )
        raise _invalid("conversation", message)
    if store is None:
        for param, used in (
            ("store", req.store),
            ("previous_response_id", req.previous_response_id),
        ):
            if used:
                raise _invalid(
                    param,
                    f"Invalid '{param}': this server keeps no responses (it is stateless "
                    "without Redis, TENSORCHAT_REDIS_URL); send the whole conversation as "
                    "'input' and leave out 'store' or set it to false.",
                )
        return False
    return req.store is not False


async def load_history(
    req: ResponsesRequest, store: ResponseStore | None, owner: str
) -> list[dict[str, object]]:
    """The stored conversation `previous_response_id` continues ([] without one)."""
    if req.previous_response_id is None or store is None:
        return []
    try:
        stored = await store.load(req.previous_response_id, owner)
    except StoreUnavailable as error:
        raise APIError(503, str(error), headers={"Retry-After": "1"}) from None
    if stored is None:
        raise APIError(
            400,
            f"Previous response with id '{req.previous_response_id}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return stored.conversation


def to_chat_request(req: ResponsesRequest, history: Sequence[dict[str, object]]) -> ResponsesAsChat:
    """The chat request for `req` after the stored conversation `history`; raises the
    APIError (400) for a history that breaks OpenAI's rules."""
    try:
        earlier = _ITEMS.validate_python(history)
    except ValidationError:  # written by this server, so only a different version's format
        message = "Invalid 'previous_response_id': the stored conversation cannot be read."
        raise _invalid("previous_response_id", message) from None
    messages, item_params = _messages([*earlier, *req.items], len(earlier))
    if req.instructions:
        messages.insert(0, ChatMessage(role="system", content=req.instructions))
        item_params.insert(0, "instructions")
    if not messages:
        raise _invalid("input", "Invalid 'input': the input has no items.")
    text_format = req.format
    check_format_with_tools(bool(req.tools), text_format.type, "text.format")
    chat = ResponsesAsChat(
        model=req.model,
        messages=messages,
        stream=req.stream,
        max_completion_tokens=req.max_output_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        user=req.user,
        tools=[
            FunctionTool(
                type="function",
                function=FunctionDefinition(
                    name=tool.name,
                    description=tool.description,
                    parameters=tool.parameters,
                    strict=tool.strict,
                ),
            )
            for tool in req.tools or []
        ]
        or None,
        tool_choice=(
            NamedToolChoice(type="function", function=FunctionName(name=req.tool_choice.name))
            if req.tool_choice is not None and not isinstance(req.tool_choice, str)
            else req.tool_choice
        ),
        parallel_tool_calls=req.parallel_tool_calls,
        response_format=(
            None
            if text_format.type == "text"
            else ResponseFormat.model_validate(
                {
                    "type": text_format.type,
                    "json_schema": (
                        {
                            "name": text_format.name,
                            "description": text_format.description,
                            "schema": text_format.schema_,
                            "strict": text_format.strict,
                        }
                        if text_format.type == "json_schema"
                        else None
                    ),
                }
            )
        ),
    )
    chat._item_params = item_params
    return chat


def _messages(items: Sequence[Item], earlier: int) -> tuple[list[ChatMessage], list[str]]:
    """Chat messages for the items (the first `earlier` from the stored conversation), and
    the parameter each came from (an assistant turn of several items: its first)."""

    def param(index: int) -> str:
        return "previous_response_id" if index < earlier else f"input[{index - earlier}]"

    messages: list[ChatMessage] = []
    params: list[str] = []
    pending: dict[str, int] = {}  # call_id -> item index, of calls not answered yet
    answering = False  # an output came since the pending calls were made
    for i, item in enumerate(items):
        if isinstance(item, FunctionCallOutputItem):
            if pending.pop(item.call_id, None) is None:
                raise _invalid(
                    f"{param(i)}.call_id",
                    f"No tool call found for function call output with call_id '{item.call_id}'.",
                )
            answering = True
            messages.append(
                ChatMessage(role="tool", content=item.output, tool_call_id=item.call_id)
            )
            params.append(param(i))
            continue
        if pending and (answering or isinstance(item, InputMessage)):
            call_id, at = next(iter(pending.items()))
            raise _invalid(param(at), f"No tool output found for function call {call_id}.")
        answering = False
        if isinstance(item, InputMessage):
            messages.append(ChatMessage(role=item.role, content=item.content))
            params.append(param(i))
            continue
        if item.call_id in pending:
            raise _invalid(f"{param(i)}.call_id", f"Duplicate function call id '{item.call_id}'.")
        pending[item.call_id] = i
        call = ToolCall(
            id=item.call_id,
            type="function",
            function=FunctionCall(name=item.name, arguments=item.arguments),
        )
        turn = messages[-1] if messages else None
        if turn is not None and turn.role == "assistant":
            turn.tool_calls = [*(turn.tool_calls or []), call]
        else:
            messages.append(ChatMessage(role="assistant", content="", tool_calls=[call]))
            params.append(param(i))
    if pending:
        call_id, at = next(iter(pending.items()))
        raise _invalid(param(at), f"No tool output found for function call {call_id}.")
    return messages, params


def _invalid(param: str, message: str) -> APIError:
    return APIError(400, message, param=param)
