"""POST /v1/responses through the official openai SDK (`responses.create`, `responses.stream`)
against the real stack (facade -> inference service, torch engine, tiny random checkpoints).

A response is the chat route's generation in another shape, so with greedy sampling a
response and the chat completion of the same conversation must agree token for token: that
is how most tests here check the mapping of input items, instructions and limits.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.integration.conftest import MISTRAL_ID
from tests.integration.facade.conftest import TORCH_ONLY, Keys, serve_without_backend
from tests.support.servers import FacadeServerThread

GREEDY: dict[str, Any] = {"model": MISTRAL_ID, "temperature": 0}
QUESTION = "Name three colours."

TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
TEXT_END_EVENTS = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def chat_answer(client: openai.OpenAI, messages: list[dict[str, Any]], limit: int) -> Any:
    return client.chat.completions.create(messages=messages, max_tokens=limit, **GREEDY)  # type: ignore[arg-type]


def assert_same_generation(response: Any, completion: Any) -> None:
    """The response carries exactly the chat completion's text, usage and end."""
    [choice] = completion.choices
    assert response.output_text == choice.message.content
    assert response.usage.input_tokens == completion.usage.prompt_tokens
    assert response.usage.output_tokens == completion.usage.completion_tokens
    assert response.usage.total_tokens == completion.usage.total_tokens
    if choice.finish_reason == "length":
        assert response.status == "incomplete"
        assert response.incomplete_details.reason == "max_output_tokens"
    else:
        assert response.status == "completed" and response.incomplete_details is None


@TORCH_ONLY
def test_a_string_input_with_instructions_is_the_chat_generation(client: openai.OpenAI) -> None:
    response = client.responses.create(
        input=QUESTION, instructions="Answer briefly.", max_output_tokens=6, **GREEDY
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.model == MISTRAL_ID and response.instructions == "Answer briefly."
    assert response.max_output_tokens == 6 and response.temperature == 0
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.status == response.status
    [part] = message.content
    assert part.type == "output_text" and part.text
    chat = chat_answer(
        client,
        [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": QUESTION}],
        6,
    )
    assert_same_generation(response, chat)


@TORCH_ONLY
def test_input_items_map_to_the_same_chat_messages(client: openai.OpenAI) -> None:
    items: Any = [
        {"role": "developer", "content": "You are terse."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello.", "annotations": []}],
        },
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
        },
    ]
    response = client.responses.create(input=items, max_output_tokens=5, **GREEDY)
    chat = chat_answer(
        client,
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "a\nb"},  # text parts join with newlines
        ],
        5,
    )
    assert_same_generation(response, chat)


@TORCH_ONLY
def test_stream_events_build_the_whole_response(client: openai.OpenAI) -> None:
    args: dict[str, Any] = {"input": QUESTION, "max_output_tokens": 6, **GREEDY}
    whole = client.responses.create(**args)
    events = list(client.responses.create(stream=True, **args))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    deltas = kinds.count("response.output_text.delta")
    terminal = "response.incomplete" if whole.status == "incomplete" else "response.completed"
    expected = TEXT_EVENTS + ["response.output_text.delta"] * deltas + TEXT_END_EVENTS
    assert kinds == [*expected, terminal] and deltas > 0
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text
    created, last = events[0].response, events[-1].response
    assert created.status == "in_progress" and created.output == [] and created.id == last.id
    assert last.status == whole.status and last.output_text == whole.output_text
    assert last.usage == whole.usage
    done = events[-2].item  # the message item as it ended
    assert done.content[0].text == whole.output_text and done.status == whole.status


@TORCH_ONLY
def test_raw_stream_names_each_event_and_sends_no_done(
    facade: FacadeServerThread, facade_keys: Keys
) -> None:
    body = {"input": QUESTION, "max_output_tokens": 3, "stream": True, **GREEDY}
    headers = {"Authorization": f"Bearer {facade_keys.full}"}
    with httpx.stream("POST", f"{facade.url}/v1/responses", json=body, headers=headers) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        raw = reply.read().decode()
    assert "[DONE]" not in raw
    frames = [frame for frame in raw.split("\n\n") if frame]
    for frame in frames:
        event_line, data_line = frame.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}"


@TORCH_ONLY
def test_stream_helper_gives_text_deltas_and_the_final_snapshot(client: openai.OpenAI) -> None:
    # The SDK's helper wants `response.completed`; a random model only ends within a small
    # limit by chance, so the event list is checked and the final response when it completed.
    with client.responses.stream(input=QUESTION, max_output_tokens=4, **GREEDY) as stream:
        events = list(stream)
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        last = events[-1]
        assert last.type in ("response.completed", "response.incomplete")
        assert last.response.output_text == text
        if last.type == "response.completed":
            assert stream.get_final_response().output_text == text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
            "input[0].content",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c1", "output": "1"}]},
            "input[0].call_id",
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}]},
            "input[0]",
        ),
        ({"input": "hi", "store": True}, "store"),
        ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": "hi", "background": True}, "background"),
        ({"input": [], "instructions": None}, "input"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {
                "input": "hi",
                "tools": [{"type": "function", "name": "f"}],
                "text": {"format": {"type": "json_object"}},
            },
            "text.format",
        ),
        ({"input": "hi", "tool_choice": {"type": "function", "name": "f"}}, "tool_choice"),
    ],
)
def test_refusals_name_the_responses_parameter(body: dict[str, Any], param: str) -> None:
    # Everything here is refused before routing: no backend needed.
    with serve_without_backend() as server:
        reply = httpx.post(
            f"{server.url}/v1/responses",
            json={"model": "m", **body},
            headers={"Authorization": "Bearer k"},
        )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


@TORCH_ONLY
def test_store_is_not_refused_when_left_out_or_false(client: openai.OpenAI) -> None:
    # OpenAI stores by default; a stateless server answers such requests without storing.
    stores: list[dict[str, Any]] = [{}, {"store": False}]
    for store in stores:
        response = client.responses.create(input="Hi", max_output_tokens=2, **store, **GREEDY)
        assert response.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


# Tools and structured outputs: the inference side's tool calling and grammars.
WEATHER_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": WEATHER_PARAMS,
}
FORCED: dict[str, Any] = {
    "tools": [WEATHER],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "max_output_tokens": 64,
    **GREEDY,
}


class Answer(BaseModel):
    answer: Literal["yes", "no", "maybe"]
    sure: bool


@TORCH_ONLY
def test_a_function_tool_round_trip(client: openai.OpenAI) -> None:
    ask: Any = {"role": "user", "content": "Weather in Rome?"}
    first = client.responses.create(input=[ask], **FORCED)
    assert first.status == "completed" and first.tools[0].name == "get_weather"
    [call] = first.output  # parallel_tool_calls false: one call, and no text
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.id.startswith("fc_") and call.call_id and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMS)
    # The output fed back with the call's result: an answer, as the chat route gives it.
    result: Any = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    args: dict[str, Any] = {"tools": [WEATHER], "tool_choice": "none", "max_output_tokens": 5}
    answer = client.responses.create(
        input=[ask, *[item.model_dump() for item in first.output], result], **args, **GREEDY
    )
    assert [item.type for item in answer.output] == ["message"]
    chat = client.chat.completions.create(  # type: ignore[call-overload]
        messages=[
            ask,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"},
        ],
        tools=[{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}],
        tool_choice="none",
        max_tokens=5,
        **GREEDY,
    )
    assert_same_generation(answer, chat)


@TORCH_ONLY
def test_streamed_call_arguments_build_the_call(client: openai.OpenAI) -> None:
    ask = "Weather in Oslo?"
    named = {**FORCED, "tool_choice": {"type": "function", "name": "get_weather"}}
    whole = client.responses.create(input=ask, **named)
    with client.responses.stream(input=ask, **FORCED) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    deltas = kinds.count("response.function_call_arguments.delta")
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    [call] = final.output
    assert call.type == "function_call" and call.arguments == arguments
    [want] = whole.output
    assert want.type == "function_call" and (call.name, call.arguments) == (
        want.name,
        want.arguments,
    )


@TORCH_ONLY
def test_text_format_json_schema_answers_in_the_schema(client: openai.OpenAI) -> None:
    parsed = client.responses.parse(
        input="Will it rain?", text_format=Answer, max_output_tokens=64, **GREEDY
    )
    assert parsed.status == "completed" and isinstance(parsed.output_parsed, Answer)
    schema: Any = {
        "type": "json_schema",
        "name": "Answer",
        "schema": {**Answer.model_json_schema(), "additionalProperties": False},
        "strict": True,
    }
    with client.responses.stream(
        input="Will it rain?", text={"format": schema}, max_output_tokens=64, **GREEDY
    ) as stream:
        final = stream.get_final_response()
    assert Answer.model_validate_json(final.output_text) == parsed.output_parsed
