"""Tools and response formats -> GenerateRequest, and ToolCallDelta pieces -> OpenAI's shapes.

The streamed side is checked the way clients read it: every chunk parses as the openai SDK's
own `ChatCompletionChunk`, and the SDK's stream accumulator (what `client.chat.completions
.stream(...).get_final_completion()` uses) rebuilds exactly the non-streaming reply.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion as SDKCompletion
from openai.types.chat import ChatCompletionChunk as SDKChunk

from facade.errors import from_request_error
from facade.schemas import ChatCompletion, ChatCompletionRequest
from facade.tool_rules import check_tool_fields, legacy_call_id
from facade.translate import ChunkEncoder, CompletionBuilder, openai_param, to_generate_request
from tensorchat.request_error import RequestError
from tensorchat.v1 import inference_pb2 as pb

USER: dict[str, Any] = {"role": "user", "content": "Weather in Paris?"}
PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather", "parameters": PARAMS},
}


def request(**fields: Any) -> ChatCompletionRequest:
    fields.setdefault("messages", [USER])
    return ChatCompletionRequest.model_validate_json(json.dumps({"model": "m", **fields}))


def rpc(**fields: Any) -> pb.GenerateRequest:
    return to_generate_request(request(**fields), "model-id", "chatcmpl-1")


# Requests --------------------------------------------------------------------------


def test_tools_are_mapped_with_their_schema() -> None:
    r = rpc(
        tools=[WEATHER, {"type": "function", "function": {"name": "now", "strict": True}}],
        parallel_tool_calls=False,
    )
    weather, now = r.tools.tools
    assert (weather.name, weather.description, weather.strict) == (
        "get_weather",
        "Current weather",
        False,
    )
    assert json.loads(weather.parameters) == PARAMS
    # OpenAI: omitted parameters define a function with an empty parameter list.
    assert json.loads(now.parameters) == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    assert now.strict and not now.description
    assert r.tools.choice.mode == pb.TOOL_CHOICE_MODE_AUTO
    assert r.tools.HasField("parallel_tool_calls") and not r.tools.parallel_tool_calls
    assert not r.HasField("constraint")


@pytest.mark.parametrize(
    ("choice", "mode", "name"),
    [
        (None, pb.TOOL_CHOICE_MODE_AUTO, ""),
        ("auto", pb.TOOL_CHOICE_MODE_AUTO, ""),
        ("none", pb.TOOL_CHOICE_MODE_NONE, ""),
        ("required", pb.TOOL_CHOICE_MODE_REQUIRED, ""),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            pb.TOOL_CHOICE_MODE_FUNCTION,
            "get_weather",
        ),
    ],
)
def test_tool_choice_modes(choice: Any, mode: int, name: str) -> None:
    r = rpc(tools=[WEATHER], tool_choice=choice)
    assert (r.tools.choice.mode, r.tools.choice.function_name) == (mode, name)
    assert not r.tools.HasField("parallel_tool_calls")  # unset: the service's default (true)


def test_no_tools_leaves_the_field_unset() -> None:
    assert not rpc().HasField("tools")
    assert not rpc(tools=[], tool_choice="none").HasField("tools")


@pytest.mark.parametrize(
    ("function_call", "mode"),
    [
        (None, pb.TOOL_CHOICE_MODE_AUTO),
        ("none", pb.TOOL_CHOICE_MODE_NONE),
        ({"name": "get_weather"}, pb.TOOL_CHOICE_MODE_FUNCTION),
    ],
)
def test_legacy_functions_are_tools_with_one_call(function_call: Any, mode: int) -> None:
    r = rpc(functions=[WEATHER["function"]], function_call=function_call)
    [tool] = r.tools.tools
    assert tool.name == "get_weather" and json.loads(tool.parameters) == PARAMS
    assert r.tools.choice.mode == mode
    assert r.tools.HasField("parallel_tool_calls") and not r.tools.parallel_tool_calls


def test_response_formats() -> None:
    assert not rpc(response_format={"type": "text"}).HasField("constraint")
    json_object = rpc(response_format={"type": "json_object"}).constraint
    assert json_object.WhichOneof("kind") == "json_object"
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    strict = rpc(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "Person", "schema": schema, "strict": True},
        }
    ).constraint
    assert json.loads(strict.json_schema) == schema and strict.strict
    loose = rpc(response_format={"type": "json_schema", "json_schema": {"name": "Any"}}).constraint
    assert loose.WhichOneof("kind") == "json_schema"
    assert json.loads(loose.json_schema) == {} and not loose.strict


@pytest.mark.parametrize(
    ("service", "tools_name", "functions_name"),
    [
        ("constraint", "response_format", "response_format"),
        ("tools[1].function.parameters", "tools[1].function.parameters", "functions[1].parameters"),
        ("tools[0].function", "tools[0].function", "functions[0]"),
        ("tools", "tools", "functions"),
        ("tool_choice", "tool_choice", "function_call"),
        ("messages[2].tool_call_id", "messages[2].tool_call_id", "messages[2].tool_call_id"),
        ("max_tokens", "max_tokens", "max_tokens"),
    ],
)
def test_service_params_are_named_as_the_client_wrote_them(
    service: str, tools_name: str, functions_name: str
) -> None:
    function = WEATHER["function"]
    functions = [function, {**function, "name": "other"}]
    assert openai_param(service, request(tools=[WEATHER])) == tools_name
    assert openai_param(service, request(functions=functions)) == functions_name


def test_a_refused_constraint_is_a_400_naming_response_format() -> None:
    req = request(response_format={"type": "json_object"})
    error = RequestError(
        grpc.StatusCode.INVALID_ARGUMENT, "constraint: bad schema", param="constraint"
    )
    api_error = from_request_error(error, "r1", "m", lambda param: openai_param(param, req))
    assert (api_error.status, api_error.param) == (400, "response_format")
    assert api_error.message == "Invalid 'response_format': bad schema"


def test_tool_history_keeps_ids_and_names() -> None:
    arguments = '{"city": "Paris"}'
    r = rpc(
        messages=[
            {"role": "developer", "content": "Be brief."},
            USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_A",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    },
                    {
                        "id": "call_B",
                        "type": "function",
                        "function": {"name": "now", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_B", "content": "9:00"},
            {"role": "tool", "tool_call_id": "call_A", "name": "weather", "content": "sunny"},
            {"role": "assistant", "content": "Sunny at nine."},
        ]
    )
    system, user, assistant, time_result, weather_result, answer = r.messages.messages
    assert (system.role, user.role) == ("system", "user")
    assert assistant.role == "assistant" and assistant.content == ""
    assert [(c.id, c.name, c.arguments) for c in assistant.tool_calls] == [
        ("call_A", "get_weather", arguments),
        ("call_B", "now", "{}"),
    ]
    assert (time_result.role, time_result.tool_call_id, time_result.name) == (
        "tool",
        "call_B",
        "now",
    )
    # A name the client sent wins over the call's.
    assert (weather_result.tool_call_id, weather_result.name) == ("call_A", "weather")
    assert weather_result.content == "sunny"
    assert not answer.tool_calls and answer.content == "Sunny at nine."


def test_legacy_function_history_gets_consistent_ids() -> None:
    r = rpc(
        functions=[{"name": "now"}],
        messages=[
            USER,
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "now", "arguments": "{}"},
            },
            {"role": "function", "name": "now", "content": "9:00"},
        ],
    )
    _, call, answer = r.messages.messages
    assert [(c.id, c.name) for c in call.tool_calls] == [(legacy_call_id(1), "now")]
    assert (answer.role, answer.tool_call_id, answer.name) == ("tool", legacy_call_id(1), "now")


# Responses -------------------------------------------------------------------------


def delta(index: int, text: str = "", *pieces: pb.ToolCallDelta) -> pb.GenerateResponse:
    return pb.GenerateResponse(index=index, delta=pb.Delta(text=text, tool_calls=pieces))


def call(index: int, arguments: str, call_id: str = "", name: str = "") -> pb.ToolCallDelta:
    return pb.ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments)


def finished(
    index: int, reason: pb.FinishReason.ValueType, completion_tokens: int
) -> pb.GenerateResponse:
    usage = pb.Usage(prompt_tokens=20, completion_tokens=completion_tokens)
    return pb.GenerateResponse(index=index, finished=pb.Finished(reason=reason, usage=usage))


# n=2: choice 0 calls two functions (pieces split mid-JSON, two pieces in one delta);
# choice 1 answers in text.
CALLS = [
    delta(0, "", call(0, "", "call_a1b2c3", "get_weather")),
    delta(1, "Let me"),
    delta(0, "", call(0, '{"city": "Pa')),
    delta(0, "", call(0, 'ris"}'), call(1, "", "call_d4e5f6", "get_weather")),
    delta(1, " think."),
    delta(0, "", call(1, '{"city": "Rome"}')),
    finished(1, pb.FINISH_REASON_STOP, 3),
    finished(0, pb.FINISH_REASON_TOOL_CALLS, 12),
]
WANT_CALLS = [
    {
        "id": "call_a1b2c3",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    },
    {
        "id": "call_d4e5f6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
    },
]


def completion(
    responses: list[pb.GenerateResponse], n: int, legacy: bool = False
) -> dict[str, Any]:
    builder = CompletionBuilder(n, want_logprobs=False, legacy_functions=legacy)
    for response in responses:
        builder.add(response)
    reply = builder.to_json("chatcmpl-1", 1700000000, "m", "fp_1")
    # What generation_run sends: validated, without the fields to_json left out.
    return json.loads(ChatCompletion.model_validate(reply).model_dump_json(exclude_unset=True))


def chunks(
    responses: list[pb.GenerateResponse], n: int, legacy: bool = False
) -> list[dict[str, Any]]:
    encoder = ChunkEncoder(
        "chatcmpl-1", 1700000000, "m", "fp_1", False, n=n, legacy_functions=legacy
    )
    raw = b"".join(encoder.response(r) for r in responses)
    assert raw.endswith(b"\n\n")
    return [json.loads(event.removeprefix(b"data: ")) for event in raw[:-2].split(b"\n\n")]


def test_completion_has_tool_calls_and_null_content() -> None:
    reply = completion(CALLS, n=2)
    SDKCompletion.model_validate(reply)
    calls, text = reply["choices"]
    assert calls["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": WANT_CALLS,
    }
    assert calls["finish_reason"] == "tool_calls"
    # No calls: no tool_calls key at all, as OpenAI.
    assert text["message"] == {"role": "assistant", "content": "Let me think.", "refusal": None}
    assert text["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] == 15


def test_text_before_a_call_stays_content() -> None:
    responses = [
        delta(0, "Checking."),
        delta(0, "", call(0, "{}", "call_x", "now")),
        finished(0, pb.FINISH_REASON_TOOL_CALLS, 4),
    ]
    message = completion(responses, n=1)["choices"][0]["message"]
    assert message["content"] == "Checking." and message["tool_calls"][0]["id"] == "call_x"
    first, text, tool, end = chunks(responses, n=1)
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text["choices"][0]["delta"] == {"content": "Checking."}
    # The call's first piece after text carries no second role.
    assert tool["choices"][0]["delta"] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_x",
                "type": "function",
                "function": {"name": "now", "arguments": "{}"},
            }
        ]
    }
    assert end["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_chunks_have_openais_exact_shape() -> None:
    events = chunks(CALLS, n=2)
    for event in events:
        SDKChunk.model_validate(event)
    deltas = [(e["choices"][0]["index"], e["choices"][0]["delta"]) for e in events]
    mine = [d for i, d in deltas if i == 0]
    # The first delta of a call: index, id, type, function.name and arguments "", with the
    # role (content null) since the choice opens with it.
    assert mine[0] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "index": 0,
                "id": "call_a1b2c3",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
    }
    # Later: argument fragments only; a new call starts with its own id and name.
    assert mine[1] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]}
    assert mine[2] == {
        "tool_calls": [
            {"index": 0, "function": {"arguments": 'ris"}'}},
            {
                "index": 1,
                "id": "call_d4e5f6",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            },
        ]
    }
    assert mine[3] == {"tool_calls": [{"index": 1, "function": {"arguments": '{"city": "Rome"}'}}]}
    assert mine[4] == {}
    # The text choice never sees a tool_calls key, and no call text leaks into content.
    text = [d for i, d in deltas if i == 1]
    assert text[0] == {"role": "assistant", "content": ""}
    assert all("tool_calls" not in d for d in text)
    assert "".join(d.get("content") or "" for _, d in deltas) == "Let me think."


def test_sdk_stream_helper_rebuilds_the_completion_exactly() -> None:
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for event in chunks(CALLS, n=2):
        state.handle_chunk(SDKChunk.model_validate(event))
    streamed = state.get_final_completion()
    whole = SDKCompletion.model_validate(completion(CALLS, n=2))
    for got, want in zip(streamed.choices, whole.choices, strict=True):
        assert got.finish_reason == want.finish_reason
        assert got.message.content == want.message.content
        # (The SDK's parsed calls add `index` and `parsed_arguments` of their own.)
        assert [_call_fields(c) for c in got.message.tool_calls or []] == [
            _call_fields(c) for c in want.message.tool_calls or []
        ]
    assert streamed.choices[0].message.tool_calls is not None
    assert [c.function.arguments for c in streamed.choices[0].message.tool_calls] == [
        '{"city": "Paris"}',
        '{"city": "Rome"}',
    ]


def test_a_later_choice_streaming_first_still_rebuilds_every_choice() -> None:
    # Choice 1 (text) streams before choice 0 (calls): the SDK's stream helper needs every
    # choice to appear first in index order, so choice 0 opens with a bare role chunk.
    responses = [r for r in CALLS if r.index == 1] + [r for r in CALLS if r.index == 0]
    events = chunks(responses, n=2)
    assert events[0]["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant"},
        "logprobs": None,
        "finish_reason": None,
    }
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for event in events:
        state.handle_chunk(SDKChunk.model_validate(event))
    streamed = state.get_final_completion()
    whole = SDKCompletion.model_validate(completion(CALLS, n=2))
    for got, want in zip(streamed.choices, whole.choices, strict=True):
        assert (got.index, got.finish_reason) == (want.index, want.finish_reason)
        assert got.message.content == want.message.content
        assert [_call_fields(c) for c in got.message.tool_calls or []] == [
            _call_fields(c) for c in want.message.tool_calls or []
        ]


def _call_fields(call: Any) -> tuple[str, str, str, str]:
    return call.id, call.type, call.function.name, call.function.arguments


LEGACY = [
    delta(0, "", call(0, "", "call_q", "get_weather")),
    delta(0, "", call(0, '{"city": ')),
    delta(0, "", call(0, '"Oslo"}')),
    finished(0, pb.FINISH_REASON_TOOL_CALLS, 6),
]


def test_legacy_functions_get_function_call_replies() -> None:
    reply = completion(LEGACY, n=1, legacy=True)
    SDKCompletion.model_validate(reply)
    [choice] = reply["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    assert choice["finish_reason"] == "function_call"
    events = chunks(LEGACY, n=1, legacy=True)
    for event in events:
        SDKChunk.model_validate(event)
    assert [e["choices"][0]["delta"] for e in events] == [
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_weather", "arguments": ""},
        },
        {"function_call": {"arguments": '{"city": '}},
        {"function_call": {"arguments": '"Oslo"}'}},
        {},
    ]
    assert events[-1]["choices"][0]["finish_reason"] == "function_call"


def test_a_choice_that_ends_without_output_still_opens_with_its_role() -> None:
    events = chunks([finished(0, pb.FINISH_REASON_LENGTH, 0)], n=1)
    assert [e["choices"][0]["delta"] for e in events] == [{"role": "assistant", "content": ""}, {}]


def test_the_sdks_own_reply_message_is_valid_history() -> None:
    # Clients append the SDK's message object as is (README); it serialises with fields of
    # its own (refusal, annotations, audio, parsed, tool_calls[].index, parsed_arguments).
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for event in chunks(CALLS, n=2):
        state.handle_chunk(SDKChunk.model_validate(event))
    reply = state.get_final_completion().choices[0].message.model_dump(mode="json")
    results = [
        {"role": "tool", "tool_call_id": "call_d4e5f6", "content": "rain"},
        {"role": "tool", "tool_call_id": "call_a1b2c3", "content": "sun"},
    ]
    req = request(messages=[USER, reply, *results], tools=[WEATHER])
    check_tool_fields(req)
    _, assistant, *answers = to_generate_request(req, "model-id", "chatcmpl-2").messages.messages
    assert [(c.id, c.arguments) for c in assistant.tool_calls] == [
        ("call_a1b2c3", '{"city": "Paris"}'),
        ("call_d4e5f6", '{"city": "Rome"}'),
    ]
    assert [(a.tool_call_id, a.name, a.content) for a in answers] == [
        ("call_d4e5f6", "get_weather", "rain"),
        ("call_a1b2c3", "get_weather", "sun"),
    ]
