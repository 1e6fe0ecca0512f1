"""Rules across fields for tools, functions and response_format: each refusal names its param."""

from __future__ import annotations

import json
from typing import Any

import pytest

from facade.errors import APIError
from facade.schemas import ChatCompletionRequest
from facade.tool_rules import CallRef, answered_calls, check_tool_fields, legacy_call_id

USER: dict[str, Any] = {"role": "user", "content": "What is the weather in Paris and Rome?"}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
TIME = {"type": "function", "function": {"name": "get_time"}}


def parse(**fields: Any) -> ChatCompletionRequest:
    fields.setdefault("messages", [USER])
    return ChatCompletionRequest.model_validate_json(json.dumps({"model": "m", **fields}))


def calls(*ids: str, name: str = "get_weather") -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": name, "arguments": "{}"}}
            for i in ids
        ],
    }


def result(call_id: str, content: str = "sunny") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


LEGACY_CALL = {"role": "assistant", "function_call": {"name": "get_time", "arguments": "{}"}}

# (case, request fields, the parameter the 400 names)
BAD = [
    ("tools and functions", {"tools": [WEATHER], "functions": [{"name": "f"}]}, "functions"),
    (
        "tool_choice and function_call",
        {"tool_choice": "auto", "function_call": "auto"},
        "function_call",
    ),
    ("required without tools", {"tool_choice": "required"}, "tool_choice"),
    (
        "named without tools",
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        "tool_choice",
    ),
    (
        "unknown function in tool_choice",
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
    ),
    (
        "unknown function in function_call",
        {"functions": [{"name": "f"}], "function_call": {"name": "g"}},
        "function_call",
    ),
    ("duplicate tool names", {"tools": [WEATHER, TIME, WEATHER]}, "tools[2]"),
    ("duplicate function names", {"functions": [{"name": "f"}, {"name": "f"}]}, "functions[1]"),
    (
        "json_schema with tools",
        {
            "tools": [WEATHER],
            "response_format": {"type": "json_schema", "json_schema": {"name": "a"}},
        },
        "response_format",
    ),
    (
        "json_object with functions",
        {"functions": [{"name": "f"}], "response_format": {"type": "json_object"}},
        "response_format",
    ),
    ("tool message first", {"messages": [result("call_1"), USER]}, "messages[0].tool_call_id"),
    (
        "tool message without a matching call",
        {"messages": [USER, calls("call_1"), result("call_2")]},
        "messages[2].tool_call_id",
    ),
    (
        "tool message without tool_call_id",
        {"messages": [USER, calls("call_1"), {"role": "tool", "content": "x"}]},
        "messages[2].tool_call_id",
    ),
    (
        "a call answered twice",
        {"messages": [USER, calls("call_1"), result("call_1"), result("call_1")]},
        "messages[3].tool_call_id",
    ),
    (
        "tool message after a user turn",
        {"messages": [USER, calls("call_1"), result("call_1"), USER, result("call_1")]},
        "messages[4].tool_call_id",
    ),
    (
        "a call left unanswered",
        {"messages": [USER, calls("call_1", "call_2"), result("call_2"), USER]},
        "messages[1].tool_calls",
    ),
    ("history ending on calls", {"messages": [USER, calls("call_1")]}, "messages[1].tool_calls"),
    (
        "duplicate call ids",
        {"messages": [USER, calls("c", "c"), result("c"), result("c")]},
        "messages[1].tool_calls",
    ),
    (
        "function message without name",
        {"messages": [USER, LEGACY_CALL, {"role": "function", "content": "x"}]},
        "messages[2].name",
    ),
    (
        "function message naming another function",
        {"messages": [USER, LEGACY_CALL, {"role": "function", "name": "f", "content": "x"}]},
        "messages[2].name",
    ),
]


@pytest.mark.parametrize(("case", "fields", "param"), BAD, ids=[c[0] for c in BAD])
def test_rule_breaks_are_400s_naming_the_param(
    case: str, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(APIError) as info:
        check_tool_fields(parse(**fields))
    assert info.value.status == 400
    assert info.value.param == param
    assert info.value.envelope()["error"]["type"] == "invalid_request_error"
    assert info.value.message


GOOD = [
    ("no tools", {}),
    ("auto and none need no tools", {"tool_choice": "none"}),
    ("empty tools", {"tools": [], "tool_choice": "auto"}),
    ("required", {"tools": [WEATHER, TIME], "tool_choice": "required"}),
    (
        "named",
        {
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
    ),
    ("text format with tools", {"tools": [WEATHER], "response_format": {"type": "text"}}),
    (
        "parallel calls answered in any order",
        {"messages": [USER, calls("a", "b"), result("b"), result("a"), USER]},
    ),
    (
        "two rounds",
        {"messages": [USER, calls("a"), result("a"), calls("b"), result("b")]},
    ),
    (
        "legacy round",
        {
            "functions": [{"name": "get_time"}],
            "function_call": {"name": "get_time"},
            "messages": [
                USER,
                LEGACY_CALL,
                {"role": "function", "name": "get_time", "content": "9"},
            ],
        },
    ),
]


@pytest.mark.parametrize(("case", "fields"), GOOD, ids=[c[0] for c in GOOD])
def test_consistent_requests_pass(case: str, fields: dict[str, Any]) -> None:
    check_tool_fields(parse(**fields))


def test_each_result_is_linked_to_its_call_and_function() -> None:
    req = parse(
        messages=[
            USER,
            calls("a", "b"),
            result("b"),
            result("a"),
            LEGACY_CALL,
            {"role": "function", "name": "get_time", "content": "9"},
        ]
    )
    assert answered_calls(req.messages) == [
        None,
        None,
        CallRef("b", "get_weather"),
        CallRef("a", "get_weather"),
        None,
        CallRef(legacy_call_id(4), "get_time"),
    ]
