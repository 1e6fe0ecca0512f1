"""Request validation table: what the schema accepts, and which parameter a refusal names."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from facade.errors import from_validation
from facade.schemas import ChatCompletionRequest
from tensorchat.limits import MAX_SCHEMA_CHARS, MAX_TOOLS

USER = [{"role": "user", "content": "hi"}]


def tool(name: str, **function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, **function}}


def assistant_call(call_id: str = "call_1", arguments: str = "{}") -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "f", "arguments": arguments}}
        ],
    }


def parse(body: dict[str, Any] | str) -> ChatCompletionRequest:
    raw = body if isinstance(body, str) else json.dumps(body)
    return ChatCompletionRequest.model_validate_json(raw)


def refusal(body: dict[str, Any] | str) -> tuple[int, str | None, str]:
    with pytest.raises(ValidationError) as info:
        parse(body)
    error = from_validation(info.value)
    return error.status, error.param, error.message


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": USER, **fields}


# (case, request body, parameter the 400 must name)
BAD = [
    ("malformed json", '{"model": "m", "messages": [', None),
    ("not an object", "[1, 2]", None),
    ("missing model", {"messages": USER}, "model"),
    ("empty model", body(model=""), "model"),
    ("missing messages", {"model": "m"}, "messages"),
    ("empty messages", body(messages=[]), "messages"),
    ("messages not a list", body(messages="hi"), "messages"),
    ("unknown role", body(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    ("tool message without content", body(messages=[{"role": "tool"}]), "messages[0].content"),
    ("user without content", body(messages=[{"role": "user"}]), "messages[0].content"),
    (
        "null user content",
        body(messages=[{"role": "user", "content": None}]),
        "messages[0].content",
    ),
    ("content a number", body(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (
        "image part",
        body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        "messages[0].content",
    ),
    (
        "second message bad",
        body(messages=[*USER, {"role": "user", "content": 1}]),
        "messages[1].content",
    ),
    ("temperature string", body(temperature="0.5"), "temperature"),
    ("temperature high", body(temperature=2.01), "temperature"),
    ("temperature negative", body(temperature=-0.1), "temperature"),
    ("top_p high", body(top_p=1.01), "top_p"),
    ("top_p negative", body(top_p=-0.5), "top_p"),
    ("n zero", body(n=0), "n"),
    ("n float", body(n=1.5), "n"),
    ("max_tokens zero", body(max_tokens=0), "max_tokens"),
    ("max_tokens string", body(max_tokens="10"), "max_tokens"),
    ("max_completion_tokens negative", body(max_completion_tokens=-1), "max_completion_tokens"),
    ("stop five", body(stop=["a", "b", "c", "d", "e"]), "stop"),
    ("stop empty string", body(stop=""), "stop"),
    ("stop number", body(stop=5), "stop"),
    ("presence high", body(presence_penalty=2.5), "presence_penalty"),
    ("frequency low", body(frequency_penalty=-2.5), "frequency_penalty"),
    ("seed float", body(seed=1.5), "seed"),
    ("logprobs string", body(logprobs="yes"), "logprobs"),
    ("top_logprobs 21", body(logprobs=True, top_logprobs=21), "top_logprobs"),
    ("logit_bias word key", body(logit_bias={"hello": 1}), "logit_bias"),
    ("logit_bias too big", body(logit_bias={"5": 101}), "logit_bias"),
    ("stream string", body(stream="yes"), "stream"),
    (
        "include_usage string",
        body(stream=True, stream_options={"include_usage": "y"}),
        "stream_options.include_usage",
    ),
    ("custom tool", body(tools=[{"type": "custom", "custom": {"name": "f"}}]), "tools[0].type"),
    ("tool without function", body(tools=[{"type": "function"}]), "tools[0].function"),
    ("function name with a space", body(tools=[tool("get weather")]), "tools[0].function.name"),
    ("function name 65 chars", body(tools=[tool("f" * 65)]), "tools[0].function.name"),
    ("function name a control token", body(tools=[tool("<tool_call>")]), "tools[0].function.name"),
    (
        "parameters not an object",
        body(tools=[tool("f", parameters=["x"])]),
        "tools[0].function.parameters",
    ),
    (
        "parameters too large",
        body(tools=[tool("f", parameters={"description": "x" * MAX_SCHEMA_CHARS})]),
        "tools[0].function.parameters",
    ),
    ("129 tools", body(tools=[tool(f"f{i}") for i in range(MAX_TOOLS + 1)]), "tools"),
    ("tools not a list", body(tools={"type": "function"}), "tools"),
    ("tool_choice unknown mode", body(tool_choice="any"), "tool_choice"),
    ("tool_choice a number", body(tool_choice=1), "tool_choice"),
    (
        "tool_choice allowed_tools",
        body(tool_choice={"type": "allowed_tools", "allowed_tools": {}}),
        "tool_choice.type",
    ),
    ("tool_choice without name", body(tool_choice={"type": "function"}), "tool_choice.function"),
    ("parallel_tool_calls string", body(parallel_tool_calls="yes"), "parallel_tool_calls"),
    ("functions entry without name", body(functions=[{"description": "d"}]), "functions[0].name"),
    ("function_call required", body(function_call="required"), "function_call"),
    ("function_call empty", body(function_call={}), "function_call.name"),
    ("response_format unknown", body(response_format={"type": "xml"}), "response_format.type"),
    ("response_format a string", body(response_format="json"), "response_format"),
    (
        "json_schema missing",
        body(response_format={"type": "json_schema"}),
        "response_format",
    ),
    (
        "json_schema without name",
        body(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
        "response_format.json_schema.name",
    ),
    (
        "json_schema schema a list",
        body(response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": []}}),
        "response_format.json_schema.schema",
    ),
    (
        "json_schema with json_object",
        body(response_format={"type": "json_object", "json_schema": {"name": "a"}}),
        "response_format.json_schema",
    ),
    (
        "call arguments not JSON",
        body(messages=[*USER, assistant_call(arguments="{'city': 'Paris'}")]),
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "call arguments a JSON list",
        body(messages=[*USER, assistant_call(arguments="[1]")]),
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "call without id",
        body(messages=[*USER, {"role": "assistant", "tool_calls": [{"type": "function"}]}]),
        "messages[1].tool_calls[0].id",
    ),
    (
        "tool calls on a user message",
        body(messages=[{**assistant_call(), "role": "user", "content": "x"}]),
        "messages[0].tool_calls",
    ),
    (
        "tool_call_id on a user message",
        body(messages=[{"role": "user", "content": "x", "tool_call_id": "c"}]),
        "messages[0].tool_call_id",
    ),
    (
        "legacy function_call arguments not JSON",
        body(
            messages=[
                *USER,
                {"role": "assistant", "function_call": {"name": "f", "arguments": "{"}},
            ]
        ),
        "messages[1].function_call.arguments",
    ),
    ("min_p high", body(min_p=1.5), "min_p"),
    ("repetition_penalty zero", body(repetition_penalty=0), "repetition_penalty"),
    ("top_k below -1", body(top_k=-2), "top_k"),
    ("min_tokens negative", body(min_tokens=-1), "min_tokens"),
]


@pytest.mark.parametrize(("case", "request_body", "param"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_a_400_naming_the_parameter(
    case: str, request_body: dict[str, Any] | str, param: str | None
) -> None:
    status, named, message = refusal(request_body)
    assert status == 400
    assert named == param
    assert message and "Value error" not in message
    if param:
        assert param in message


GOOD = [
    ("minimal", body()),
    ("top_p 1 allowed", body(top_p=1.0)),
    ("top_p 0 allowed", body(top_p=0)),
    ("temperature int", body(temperature=1)),
    ("temperature bounds", body(temperature=2)),
    ("stop string", body(stop="\n")),
    ("four stops", body(stop=["a", "b", "c", "d"])),
    ("text parts", body(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}]}])),
    ("assistant null content", body(messages=[*USER, {"role": "assistant", "content": None}])),
    ("developer role", body(messages=[{"role": "developer", "content": "be brief"}, *USER])),
    ("unknown fields ignored", body(store=True, metadata={"a": "b"}, reasoning_effort="low")),
    ("empty tools", body(tools=[], tool_choice="none")),
    ("text response_format", body(response_format={"type": "text"})),
    ("json_object", body(response_format={"type": "json_object"})),
    (
        "json_schema",
        body(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "Person", "schema": {"type": "object"}, "strict": True},
            }
        ),
    ),
    (
        "json_schema without schema",
        body(response_format={"type": "json_schema", "json_schema": {"name": "a"}}),
    ),
    (
        "tools with every choice",
        body(
            tools=[
                tool("get_weather", description="d", parameters={"type": "object"}, strict=True)
            ],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
        ),
    ),
    ("tool without parameters", body(tools=[tool("now")], tool_choice="required")),
    ("128 tools", body(tools=[tool(f"f{i}") for i in range(MAX_TOOLS)])),
    ("legacy functions", body(functions=[{"name": "f"}], function_call={"name": "f"})),
    (
        "tool history",
        body(
            messages=[
                *USER,
                assistant_call(),
                {
                    "role": "tool",
                    "tool_call_id": "call_1",
                    "content": [{"type": "text", "text": "4"}],
                },
            ]
        ),
    ),
    (
        "legacy function history",
        body(
            messages=[
                *USER,
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "f", "arguments": "{}"},
                },
                {"role": "function", "name": "f", "content": "4"},
            ]
        ),
    ),
    ("negative seed", body(seed=-5)),
    (
        "extensions",
        body(ignore_eos=True, min_tokens=2, top_k=-1, min_p=0.1, repetition_penalty=1.1),
    ),
]


@pytest.mark.parametrize(("case", "request_body"), GOOD, ids=[c[0] for c in GOOD])
def test_valid_requests_parse(case: str, request_body: dict[str, Any]) -> None:
    req = parse(request_body)
    assert req.messages


def test_text_parts_are_joined_and_null_assistant_content_is_empty() -> None:
    req = parse(
        body(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                {"role": "assistant", "content": None},
            ]
        )
    )
    assert [m.content for m in req.messages] == ["a\nb", ""]


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert parse(body(max_tokens=10, max_completion_tokens=20)).completion_limit == 20
    assert parse(body(max_tokens=10)).completion_limit == 10
    assert parse(body()).completion_limit is None


def test_stop_list_and_include_usage_helpers() -> None:
    req = parse(body(stop="x", stream=True, stream_options={"include_usage": True}))
    assert req.stop_list == ["x"]
    assert req.include_usage
    assert not parse(body(stream=True)).include_usage
