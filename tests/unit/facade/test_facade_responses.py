"""The Responses API's mapping without a model: input items -> the GenerateRequest the chat
route would build, and tool-call pieces -> function_call items and their events (the
end-to-end tool tests wait for the inference side's tool calling)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from facade.errors import APIError
from facade.responses_input import to_chat_request
from facade.responses_output import OutputAssembler
from facade.responses_schemas import ResponseObject, ResponsesRequest
from facade.schemas import ChatCompletionRequest
from facade.translate import openai_param, to_generate_request
from tensorchat.v1 import inference_pb2 as pb

CALL: dict[str, Any] = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
TOOL: dict[str, Any] = {"type": "function", "name": "f", "parameters": {"type": "object"}}


def rpc_of_response(body: dict[str, Any]) -> pb.GenerateRequest:
    req = ResponsesRequest.model_validate({"model": "m", **body})
    return to_generate_request(to_chat_request(req, []), "m", "r")


def rpc_of_chat(body: dict[str, Any]) -> pb.GenerateRequest:
    req = ChatCompletionRequest.model_validate({"model": "m", **body})
    return to_generate_request(req, "m", "r")


def test_items_with_calls_are_the_chat_requests_messages_and_tools() -> None:
    response = rpc_of_response(
        {
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": "Weather?"},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Looking."}],
                },
                CALL,
                {**CALL, "call_id": "c2", "arguments": '{"a": 1}'},
                {"type": "function_call_output", "call_id": "c2", "output": "two"},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
            ],
            "tools": [TOOL],
            "tool_choice": {"type": "function", "name": "f"},
            "parallel_tool_calls": False,
            "max_output_tokens": 7,
            "temperature": 0.5,
        }
    )
    chat = rpc_of_chat(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": "Looking.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "c2", "content": "two"},
                {"role": "tool", "tool_call_id": "c1", "content": "one"},
            ],
            # The Responses API's function tools are strict unless they say otherwise.
            "tools": [{"type": "function", "function": {**TOOL, "type": None, "strict": True}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "parallel_tool_calls": False,
            "max_completion_tokens": 7,
            "temperature": 0.5,
        }
    )
    assert response == chat


def test_text_format_json_schema_is_the_chat_constraint() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    response = rpc_of_response(
        {
            "input": "x",
            "text": {
                "format": {"type": "json_schema", "name": "A", "schema": schema, "strict": True}
            },
        }
    )
    chat = rpc_of_chat(
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "A", "schema": schema, "strict": True},
            },
        }
    )
    assert response == chat and response.constraint.json_schema


@pytest.mark.parametrize(
    ("items", "param"),
    [
        ([CALL, {"role": "user", "content": "next"}], "input[0]"),  # not answered
        ([CALL, {**CALL, "call_id": "c1"}], "input[1].call_id"),  # same id twice
        # An output, then a new call while c1 still waits: answer every call of a turn first.
        (
            [
                CALL,
                {**CALL, "call_id": "c2"},
                {"type": "function_call_output", "call_id": "c2", "output": ""},
                {**CALL, "call_id": "c3"},
            ],
            "input[0]",
        ),
    ],
)
def test_call_history_rules_name_the_item(items: list[dict[str, Any]], param: str) -> None:
    req = ResponsesRequest.model_validate({"model": "m", "input": items})
    with pytest.raises(APIError) as info:
        to_chat_request(req, [])
    assert info.value.param == param


def test_stored_items_are_named_by_previous_response_id() -> None:
    req = ResponsesRequest.model_validate(
        {"model": "m", "input": "go on", "previous_response_id": "resp_1"}
    )
    with pytest.raises(APIError) as info:
        to_chat_request(req, [CALL])
    assert info.value.param == "previous_response_id"


def delta(**fields: Any) -> pb.GenerateResponse:
    return pb.GenerateResponse(delta=pb.Delta(**fields))


def test_text_then_calls_are_a_message_and_function_call_items() -> None:
    output = OutputAssembler(emit=True)
    events = output.add(delta(text="Let me see."))
    events += output.add(delta(tool_calls=[pb.ToolCallDelta(index=0, id="c9", name="f")]))
    events += output.add(delta(tool_calls=[pb.ToolCallDelta(index=0, arguments='{"a"')]))
    events += output.add(delta(tool_calls=[pb.ToolCallDelta(index=0, arguments=":1}")]))
    finished = pb.Finished(
        reason=pb.FINISH_REASON_TOOL_CALLS, usage=pb.Usage(prompt_tokens=3, completion_tokens=9)
    )
    events += output.add(pb.GenerateResponse(finished=finished))
    assert [kind for kind, _ in events] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    message, call = output.items
    assert message["content"][0]["text"] == "Let me see." and message["status"] == "completed"
    assert call == {"type": "function_call", "id": call["id"], "call_id": "c9", "name": "f",
                    "arguments": '{"a":1}', "status": "completed"}  # fmt: skip
    # The added item is as it was then (no arguments yet); the done one is whole.
    assert events[6][1]["item"]["arguments"] == "" and events[10][1]["item"] is call
    assert json.loads(events[9][1]["arguments"]) == {"a": 1}
    assert output.status == "completed" and output.usage.total_tokens == 12


def test_a_length_finish_makes_the_items_and_the_response_incomplete() -> None:
    output = OutputAssembler(emit=False)
    output.add(delta(text="Half"))
    assert (
        output.add(pb.GenerateResponse(finished=pb.Finished(reason=pb.FINISH_REASON_LENGTH))) == []
    )
    assert output.status == "incomplete" and output.items[0]["status"] == "incomplete"
    ResponseObject.model_validate(
        {"id": "resp_1", "created_at": 1, "status": "incomplete", "error": None,
         "incomplete_details": {"reason": "max_output_tokens"}, "instructions": None,
         "max_output_tokens": 1, "model": "m", "output": output.items,
         "parallel_tool_calls": True, "previous_response_id": None, "temperature": None,
         "top_p": None, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
         "tools": [], "usage": None, "user": None, "metadata": {}, "store": False}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("model", "body"),
    [
        # Found by schemathesis: a `type` that is not a string was looked up in a set/dict and
        # raised TypeError (a 500) instead of a validation error (a 400).
        (ChatCompletionRequest, {"messages": [{"role": "user", "content": [{"type": {}}]}]}),
        (ResponsesRequest, {"input": [{"role": "user", "content": [{"type": {}, "text": ""}]}]}),
        (ResponsesRequest, {"input": [{"type": {}, "call_id": "0", "output": ""}]}),
    ],
)
def test_a_type_that_is_not_a_string_is_a_validation_error(
    model: type[ChatCompletionRequest | ResponsesRequest], body: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        model.model_validate({"model": "m", **body})


@pytest.mark.parametrize(
    ("service", "client"),
    [
        ("messages[0].content", "instructions"),
        ("messages[2].tool_calls", "input[1]"),  # the assistant turn's first item
        ("messages[3].tool_call_id", "input[3]"),
        ("messages", "input"),
        ("constraint", "text.format"),
        ("tools[0].function.parameters", "tools[0].parameters"),
        ("max_tokens", "max_output_tokens"),
        ("tool_choice", "tool_choice"),
    ],
)
def test_service_params_are_named_as_the_responses_request_wrote_them(
    service: str, client: str
) -> None:
    req = ResponsesRequest.model_validate(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": "Weather?"},
                CALL,
                {**CALL, "call_id": "c2"},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
                {"type": "function_call_output", "call_id": "c2", "output": "two"},
            ],
            "tools": [TOOL],
        }
    )
    assert openai_param(service, to_chat_request(req, [])) == client
