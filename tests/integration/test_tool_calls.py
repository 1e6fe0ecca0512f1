"""Tool calls over real gRPC on both engines (torch, and trtllm over the fake executor, which
enforces the structural tag with real xgrammar): random-weight models under the tool grammar
make only valid calls, streamed as ToolCallDeltas, and end with FINISH_REASON_TOOL_CALLS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest

from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.integration.conftest import MISTRAL_ID, QWEN_ID, tiny_models_server
from tests.support.servers import InferenceServerThread

# Qwen2.5's template introduces tools at length (about 240 tokens here): more context than the
# other integration tests' 256.
TOOLS_CONTEXT = 512

# Small bounded arguments, so that a random model ends its calls well within max_tokens.
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"enum": ["Paris", "Oslo"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
CLOCK = {
    "type": "object",
    "properties": {"utc": {"type": "boolean"}},
    "required": ["utc"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER, "get_time": CLOCK}
ASK = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="Weather in Paris?")])
MODELS = [MISTRAL_ID, QWEN_ID]
# The token each model's call starts with: Mistral's [TOOL_CALLS] control token, Qwen2.5's
# <tool_call> (an added token that is text to the grammar and the parser).
TRIGGERS = {MISTRAL_ID: "[TOOL_CALLS]", QWEN_ID: "<tool_call>"}


@pytest.fixture(scope="module", params=["torch", "trtllm"], ids=["torch", "trtllm-fake"])
def inference_server(
    request: pytest.FixtureRequest,
    tiny_mistral_dir: Path,
    tiny_qwen2_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InferenceServerThread]:
    with tiny_models_server(
        request.param, tiny_mistral_dir, tiny_qwen2_dir, tmp_path_factory, TOOLS_CONTEXT
    ) as server:
        yield server


@pytest.fixture()
def stub(inference_server: InferenceServerThread) -> Iterator[pb_grpc.InferenceStub]:
    with grpc.insecure_channel(inference_server.address) as channel:
        yield pb_grpc.InferenceStub(channel)


@dataclass
class ToolChoice:
    text: str = ""
    calls: list[list[str]] = field(default_factory=list)  # [id, name, arguments]
    finished: pb.Finished | None = None


def tools(mode: int, *, function: str = "", parallel: bool | None = None) -> pb.Tools:
    spec = pb.Tools(
        tools=[
            pb.Tool(name=name, parameters=json.dumps(schema)) for name, schema in SCHEMAS.items()
        ],
        choice=pb.ToolChoice(mode=mode, function_name=function),  # type: ignore[arg-type]
    )
    if parallel is not None:
        spec.parallel_tool_calls = parallel
    return spec


def call_tools(
    stub: pb_grpc.InferenceStub,
    model: str,
    *,
    seed: int = 1,
    logit_bias: dict[int, float] | None = None,
    **fields: Any,
) -> dict[int, ToolChoice]:
    """The choices of a sampled request, with calls reassembled from their deltas in the shape
    OpenAI streams them (first piece: index, id, name, arguments ""; then argument pieces)."""
    request = pb.GenerateRequest(
        model=model,
        messages=ASK,
        sampling=pb.SamplingParams(temperature=1.0, seed=seed, logit_bias=logit_bias),
        stopping=pb.StoppingCriteria(max_tokens=64),
        **fields,
    )
    choices: dict[int, ToolChoice] = {}
    for response in stub.Generate(request, timeout=120):
        choice = choices.setdefault(response.index, ToolChoice())
        assert choice.finished is None
        if response.HasField("finished"):
            choice.finished = response.finished
            continue
        choice.text += response.delta.text
        for delta in response.delta.tool_calls:
            if delta.id:
                assert delta.index == len(choice.calls) and delta.name
                assert delta.arguments == ""
                choice.calls.append([delta.id, delta.name, ""])
            else:
                assert delta.index == len(choice.calls) - 1 and not delta.name
                choice.calls[-1][2] += delta.arguments
    return choices


def ended_with_calls(choices: dict[int, ToolChoice]) -> list[ToolChoice]:
    """The choices the grammar let end (LENGTH may cut anywhere), each checked: valid calls,
    FINISH_REASON_TOOL_CALLS, no call text in the text."""
    ended = []
    for choice in choices.values():
        assert choice.finished is not None
        if choice.finished.reason == pb.FINISH_REASON_LENGTH:
            continue
        assert choice.finished.reason == pb.FINISH_REASON_TOOL_CALLS, choice
        assert choice.calls
        for call_id, name, arguments in choice.calls:
            assert call_id
            jsonschema.validate(json.loads(arguments), SCHEMAS[name])
            # Compact JSON, as json.dumps writes it: no whitespace loops.
            assert arguments == json.dumps(json.loads(arguments))
        ended.append(choice)
    return ended


@pytest.mark.parametrize("model", MODELS)
def test_required_makes_valid_calls_in_every_choice(
    stub: pb_grpc.InferenceStub, model: str
) -> None:
    choices = call_tools(stub, model, n=4, tools=tools(pb.TOOL_CHOICE_MODE_REQUIRED))
    assert len(choices) == 4
    ended = ended_with_calls(choices)
    assert len(ended) >= 2, "bounded calls end within max_tokens"
    assert all(choice.text == "" for choice in choices.values())  # calls only, from token one
    ids = [call[0] for choice in ended for call in choice.calls]
    assert len(set(ids)) == len(ids)  # every call its own id


@pytest.mark.parametrize("model", MODELS)
def test_a_named_function_without_parallel_calls_is_called_once(
    stub: pb_grpc.InferenceStub, model: str
) -> None:
    mode = pb.TOOL_CHOICE_MODE_FUNCTION
    choices = call_tools(
        stub, model, n=3, seed=2, tools=tools(mode, function="get_time", parallel=False)
    )
    ended = ended_with_calls(choices)
    assert ended
    for choice in ended:
        assert [name for _, name, _ in choice.calls] == ["get_time"]


@pytest.mark.parametrize("model", MODELS)
def test_auto_calls_once_the_model_writes_its_trigger(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread, model: str
) -> None:
    """Under "auto" the model may write text; a strong bias on the trigger token makes it
    call, and from the trigger on the grammar allows only valid calls."""
    tokenizer = inference_server.model(model).tokenizer
    trigger = tokenizer.hf.convert_tokens_to_ids(TRIGGERS[model])
    assert isinstance(trigger, int)
    request_tools = tools(pb.TOOL_CHOICE_MODE_AUTO, parallel=False)
    choices = call_tools(stub, model, n=2, seed=3, logit_bias={trigger: 100.0}, tools=request_tools)
    ended = ended_with_calls(choices)
    assert ended
    for choice in choices.values():
        assert TRIGGERS[model] not in choice.text and "arguments" not in choice.text
    for choice in ended:
        assert len(choice.calls) == 1


def test_tool_choice_none_is_served_without_calls(stub: pb_grpc.InferenceStub) -> None:
    choices = call_tools(stub, QWEN_ID, tools=tools(pb.TOOL_CHOICE_MODE_NONE))
    (choice,) = choices.values()
    assert choice.calls == []
    assert choice.finished is not None
    assert choice.finished.reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
