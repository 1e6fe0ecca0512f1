"""chat_messages: tool calls in the history are read from assistant messages only, and every
tool result must answer one of them."""

from __future__ import annotations

import pytest

from inference.errors import RequestError
from inference.tool_request import chat_messages
from tensorchat.v1 import inference_pb2 as pb


def test_assistant_calls_are_parsed_and_answered_by_tool_results() -> None:
    messages = [
        pb.ChatMessage(role="user", content="weather?"),
        pb.ChatMessage(
            role="assistant",
            tool_calls=[pb.ToolCall(id="call_1", name="get_weather", arguments='{"city": "Oslo"}')],
        ),
        pb.ChatMessage(role="tool", content="21 C", tool_call_id="call_1"),
    ]
    user, assistant, tool = chat_messages(messages)
    assert user.tool_calls == ()
    assert [(c.id, c.name, c.arguments) for c in assistant.tool_calls] == [
        ("call_1", "get_weather", {"city": "Oslo"})
    ]
    assert tool.tool_call_id == "call_1"


def test_only_assistant_messages_make_tool_calls() -> None:
    call = pb.ToolCall(id="call_1", name="f", arguments="{}")
    with pytest.raises(RequestError) as caught:
        chat_messages([pb.ChatMessage(role="user", content="hi", tool_calls=[call])])
    assert caught.value.param == "messages[0].tool_calls"


def test_a_call_of_a_later_message_answers_no_earlier_tool_result() -> None:
    messages = [
        pb.ChatMessage(role="user", content="hi"),
        pb.ChatMessage(role="tool", content="21 C", tool_call_id="call_1"),
        pb.ChatMessage(role="assistant", tool_calls=[pb.ToolCall(id="call_1", name="f")]),
    ]
    with pytest.raises(RequestError) as caught:
        chat_messages(messages)
    assert caught.value.param == "messages[1].tool_call_id"
