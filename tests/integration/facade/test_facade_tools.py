"""Tools and structured outputs end to end: openai SDK and LangChain -> facade -> real service.

Two stacks: the tiny random-weight checkpoints (Mistral v0.3 and Qwen2.5 tokenizers and
templates, the session's servers), where only the grammar can make outputs valid; and the
embedded default model (SmolLM2, generic tool format), on which the README's examples run
exactly as written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

from facade.settings import FacadeSettings
from inference.config import default_models_config
from tests.integration.conftest import MISTRAL_ID, QWEN_ID, tiny_models_server
from tests.integration.facade.conftest import (
    TORCH_ONLY,
    FacadeServerThread,
    Keys,
    keyed_facade,
)
from tests.integration.test_tool_calls import TOOLS_CONTEXT
from tests.support.servers import InferenceServerThread

README = Path(__file__).resolve().parents[3] / "README.md"
CITIES = ["Paris", "Rome", "Oslo"]
WEATHER_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": CITIES},
        "celsius": {"type": "boolean"},
    },
    "required": ["city", "celsius"],
    "additionalProperties": False,
}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": WEATHER_PARAMS,
    },
}
# Short, bounded values: a random model can only end the JSON when the grammar lets it.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["yes", "no", "maybe"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 9},
        "sure": {"type": "boolean"},
    },
    "required": ["answer", "confidence", "sure"],
    "additionalProperties": False,
}
ASK: Any = [{"role": "user", "content": "Is it going to rain in Paris? Answer in JSON."}]
# Ids the service generates, per the model's tool format.
ID_FORMATS = {MISTRAL_ID: r"[A-Za-z0-9]{9}", QWEN_ID: r"call_[A-Za-z0-9]{24}"}
MARKERS = ("[TOOL_CALLS]", "<tool_call>", "</tool_call>")


# The tiny checkpoints ------------------------------------------------------------------


@pytest.fixture(scope="module")
def inference_server(
    request: pytest.FixtureRequest,
    tiny_mistral_dir: Path,
    tiny_qwen2_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InferenceServerThread]:
    """The tiny models with room for Qwen2.5's tool prompt (TORCH_ONLY picks the engine)."""
    with tiny_models_server(
        request.param, tiny_mistral_dir, tiny_qwen2_dir, tmp_path_factory, TOOLS_CONTEXT
    ) as server:
        yield server


@pytest.fixture(scope="module")
def facade(
    inference_server: InferenceServerThread, facade_keys: Keys
) -> Iterator[FacadeServerThread]:
    with keyed_facade(inference_server, facade_keys) as server:
        yield server


def formatted_answers(
    client: openai.OpenAI, model: str, response_format: Any, seed: int
) -> list[str]:
    """The contents of 8 sampled choices that ended before max_tokens (at least one)."""
    completion = client.chat.completions.create(
        model=model,
        messages=ASK,
        n=8,
        temperature=1.0,
        seed=seed,
        max_tokens=96,
        response_format=response_format,
    )
    finished = [c for c in completion.choices if c.finish_reason != "length"]
    assert finished, "every choice ran out of tokens: nothing was checked"
    assert all(c.finish_reason == "stop" for c in finished)
    return [c.message.content or "" for c in finished]


@TORCH_ONLY
@pytest.mark.parametrize("model", [MISTRAL_ID, QWEN_ID])
def test_json_schema_outputs_always_validate(client: openai.OpenAI, model: str) -> None:
    schema_format = {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": ANSWER_SCHEMA, "strict": True},
    }
    for content in formatted_answers(client, model, schema_format, seed=11):
        jsonschema.validate(json.loads(content), ANSWER_SCHEMA)


@TORCH_ONLY
def test_json_object_outputs_are_objects(client: openai.OpenAI) -> None:
    for content in formatted_answers(client, QWEN_ID, {"type": "json_object"}, seed=5):
        assert isinstance(json.loads(content), dict)


@TORCH_ONLY
@pytest.mark.parametrize("model", [MISTRAL_ID, QWEN_ID])
@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_forced_tool_calls_are_valid_calls(
    client: openai.OpenAI, model: str, tool_choice: Any
) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER],
        tool_choice=tool_choice,
        parallel_tool_calls=False,
        n=4,
        temperature=1.0,
        seed=3,
        max_tokens=64,
    )
    calls = [c for c in completion.choices if c.finish_reason == "tool_calls"]
    assert calls, [c.finish_reason for c in completion.choices]
    for choice in completion.choices:
        assert choice.finish_reason in ("tool_calls", "length")
    for choice in calls:
        message = choice.message
        assert message.content is None
        [call] = message.tool_calls or []  # parallel_tool_calls false: one call
        assert call.type == "function" and call.function.name == "get_weather"
        assert re.fullmatch(ID_FORMATS[model], call.id), call.id
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMS)


@TORCH_ONLY
@pytest.mark.parametrize("model", [MISTRAL_ID, QWEN_ID])
def test_streamed_calls_rebuild_the_non_streamed_reply(client: openai.OpenAI, model: str) -> None:
    args: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Weather in Oslo and Rome?"}],
        "tools": [WEATHER],
        "tool_choice": "required",
        # One call per choice: a random model under "required" may go on calling until
        # max_tokens, and the SDK's get_final_completion raises on any "length" choice.
        "parallel_tool_calls": False,
        "n": 2,
        "temperature": 1.0,
        "seed": 21,
        "max_tokens": 96,
    }
    whole = client.chat.completions.create(**args)
    first_pieces: list[Any] = []
    with client.chat.completions.stream(**args) as stream:
        for chunk in stream:
            if chunk.type != "chunk":
                continue
            for choice in chunk.chunk.choices:
                assert not any(m in (choice.delta.content or "") for m in MARKERS)
                first_pieces += [c for c in choice.delta.tool_calls or [] if c.id]
        streamed = stream.get_final_completion()
    # The first piece of each call: index, id, type, name and arguments "".
    assert first_pieces
    for piece in first_pieces:
        assert piece.type == "function" and piece.function is not None
        assert piece.function.name == "get_weather" and piece.function.arguments == ""
    # Same seed, same output; only the server-made call ids differ between the two requests.
    for got, want in zip(streamed.choices, whole.choices, strict=True):
        assert got.finish_reason == want.finish_reason
        assert got.message.content == want.message.content
        assert [(c.function.name, c.function.arguments) for c in got.message.tool_calls or []] == [
            (c.function.name, c.function.arguments) for c in want.message.tool_calls or []
        ]


@TORCH_ONLY
@pytest.mark.parametrize("model", [MISTRAL_ID, QWEN_ID])
def test_a_conversation_goes_on_after_tool_results(client: openai.OpenAI, model: str) -> None:
    # OpenAI-style ids from another server: the service maps them to the model's format.
    reply = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_pAr1s",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_0sL0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_0sL0", "content": "snow, -3 °C"},
            {"role": "tool", "tool_call_id": "call_pAr1s", "content": "sunny, 24 °C"},
        ],
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=8,
        extra_body={"ignore_eos": True},
    )
    [choice] = reply.choices
    assert choice.finish_reason == "length" and choice.message.content
    assert choice.message.tool_calls is None


@TORCH_ONLY
def test_invalid_schema_is_a_400_naming_response_format(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=QWEN_ID,
            messages=ASK,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "Bad", "schema": {"type": "no-such-type"}},
            },
        )
    assert (info.value.param or "").startswith("response_format")


@TORCH_ONLY
def test_langchain_streams_tool_call_chunks(facade: FacadeServerThread, facade_keys: Keys) -> None:
    from langchain_core.messages import AIMessage, AIMessageChunk
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model=QWEN_ID,
        base_url=f"{facade.url}/v1",
        api_key=facade_keys.full,  # type: ignore[arg-type]
        temperature=1.0,
        seed=8,
        max_retries=0,
        max_completion_tokens=64,
    ).bind_tools([WEATHER], tool_choice="get_weather")
    whole = llm.invoke("Weather in Paris?")
    pieces = [p for p in llm.stream("Weather in Paris?") if isinstance(p, AIMessageChunk)]
    assert len(pieces) > 2  # streamed in pieces, reassembled by LangChain
    total = pieces[0]
    for piece in pieces[1:]:
        total += piece
    assert isinstance(whole, AIMessage)
    for message in (whole, total):
        [call] = message.tool_calls
        assert call["name"] == "get_weather"
        jsonschema.validate(call["args"], WEATHER_PARAMS)
    # Same seed: the streamed call is the non-streamed one.
    assert total.tool_calls[0]["args"] == whole.tool_calls[0]["args"]


# The README, on the embedded default model -------------------------------------------------

DEV_KEY = "tc-dev-readme"


@pytest.fixture(scope="module")
def default_facade(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FacadeServerThread]:
    inference = InferenceServerThread(default_models_config()).start(timeout=600)
    settings = FacadeSettings(
        backends=[inference.address],
        keys_file=tmp_path_factory.mktemp("readme") / "keys.json",
        api_keys=[DEV_KEY],  # type: ignore[list-item]
        refresh_interval_s=1.0,
    )
    facade = FacadeServerThread(settings).start()
    yield facade
    facade.stop()
    inference.stop()


def readme_examples() -> list[str]:
    """The Python blocks of the README's "Tools and structured outputs" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Tools and structured outputs\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def run_example(index: int, facade: FacadeServerThread) -> dict[str, Any]:
    """Runs one README example against the facade, as written but for the host and key."""
    code = readme_examples()[index]
    code = code.replace("http://localhost:8000", facade.url).replace("tc-dev-...", DEV_KEY)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(code, f"README.md example {index}", "exec"), namespace)
    return namespace


def test_the_readme_has_the_three_examples() -> None:
    examples = readme_examples()
    assert len(examples) == 3
    assert "chat.completions.parse" in examples[0]
    assert "chat.completions.stream" in examples[1] and "get_final_completion" in examples[1]
    assert "bind_tools" in examples[2]
    assert 'method="json_schema"' in examples[2] and 'method="function_calling"' in examples[2]


@pytest.mark.slow
def test_readme_parse_with_a_pydantic_model(default_facade: FacadeServerThread) -> None:
    ns = run_example(0, default_facade)
    assert isinstance(ns["city"], ns["City"])
    assert ns["completion"].choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_readme_tools_with_streaming(default_facade: FacadeServerThread) -> None:
    ns = run_example(1, default_facade)
    final = ns["final"]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.content is None
    call = ns["call"]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(
        json.loads(call.function.arguments), ns["tools"][0]["function"]["parameters"]
    )
    assert ns["answer"].choices[0].finish_reason in ("stop", "length", "tool_calls")


@pytest.mark.slow
def test_readme_langchain(default_facade: FacadeServerThread) -> None:
    ns = run_example(2, default_facade)
    [call] = ns["reply"].tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"].get("city"), str)
    assert isinstance(ns["from_schema"], ns["City"])
    assert isinstance(ns["from_function"], ns["City"])
