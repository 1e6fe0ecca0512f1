"""Prompts with tools: parity with each model's reference, and no control tokens from request text.

Oracles: mistral-common's `MistralTokenizer.v3()` (tools, calls with their 9-character ids,
results) for Mistral v0.3; Hugging Face's `apply_chat_template(..., tools=...)` on the real
Qwen2.5 template; the documented generic format as literal text.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from inference.text import ChatMessage, FunctionTool, ModelTokenizer, ToolCall
from inference.text.tool_format import (
    GenericToolFormat,
    MistralToolFormat,
    TemplateToolFormat,
)
from tests.unit.text.test_chat_encoding import CONTROL_STRINGS, random_text, special_ids

Encoder = Callable[[list[ChatMessage], list[FunctionTool]], list[int]]

WEATHER = FunctionTool(
    name="get_weather",
    description="The weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
)


def random_tools(rnd: random.Random, *, injections: bool) -> list[FunctionTool]:
    tools = [WEATHER]
    for k in range(rnd.randint(0, 2)):
        name = f"tool_{k}-{rnd.randint(0, 99)}"
        prop = rnd.choice(["q", "query", "x y", "naïve"])
        tools.append(
            FunctionTool(
                name=name,
                description=random_text(rnd, injections=injections),
                parameters={
                    "type": "object",
                    "properties": {prop: {"type": "string", "description": "a value"}},
                },
            )
        )
    return tools


def random_calls(
    rnd: random.Random, tools: list[FunctionTool], *, injections: bool
) -> list[ToolCall]:
    calls = []
    for _ in range(rnd.randint(1, 2)):
        tool = rnd.choice(tools)
        arguments: dict[str, Any] = {"city": random_text(rnd, injections=injections)}
        if rnd.random() < 0.5:
            arguments["days"] = rnd.randint(1, 9)
        if rnd.random() < 0.3:
            arguments["nested"] = {
                "list": [1, "two", None, True],
                "s": random_text(rnd, injections=injections),
            }
        # OpenAI-style ids the model's format has to map, and some already valid.
        call_id = rnd.choice(
            [f"call_{rnd.getrandbits(64):x}", f"{rnd.getrandbits(40):x}"[:9].rjust(9, "a")]
        )
        calls.append(ToolCall(call_id, tool.name, arguments))
    return calls


def random_tool_conversation(
    rnd: random.Random, *, injections: bool
) -> tuple[list[ChatMessage], list[FunctionTool]]:
    """Rounds of user, then maybe assistant calls, their results and an answer; ends with a
    user turn or with results."""
    tools = random_tools(rnd, injections=injections)
    messages: list[ChatMessage] = []
    if rnd.random() < 0.5:
        messages.append(ChatMessage("system", random_text(rnd, injections=injections)))
    rounds = rnd.randint(1, 3)
    for r in range(rounds):
        messages.append(ChatMessage("user", random_text(rnd, injections=injections)))
        last = r == rounds - 1
        if rnd.random() < 0.6 or (last and rnd.random() < 0.5):
            calls = random_calls(rnd, tools, injections=injections)
            messages.append(ChatMessage("assistant", "", tool_calls=tuple(calls)))
            for call in calls:
                result = rnd.choice(
                    [
                        random_text(rnd, injections=injections),
                        json.dumps(
                            {
                                "temp": rnd.randint(-5, 30),
                                "note": random_text(rnd, injections=injections),
                            }
                        ),
                        "",
                    ]
                )
                messages.append(ChatMessage("tool", result, tool_call_id=call.id, name=call.name))
            if last:
                break
            messages.append(
                ChatMessage("assistant", random_text(rnd, injections=injections).strip())
            )
        elif not last:
            messages.append(
                ChatMessage("assistant", random_text(rnd, injections=injections).strip())
            )
    return messages, tools


# -- Mistral v0.3 ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mistral_common_encode(mistral_tokenizer: ModelTokenizer) -> Encoder:
    pytest.importorskip("sentencepiece", reason="mistral-common needs sentencepiece for v3")
    from mistral_common.protocol.instruct.messages import (
        AssistantMessage,
        SystemMessage,
        ToolMessage,
        UserMessage,
    )
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.tool_calls import Function, FunctionCall, Tool
    from mistral_common.protocol.instruct.tool_calls import ToolCall as MistralToolCall
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    reference = MistralTokenizer.v3()
    tool_format = mistral_tokenizer.tool_format
    assert isinstance(tool_format, MistralToolFormat)
    mapped = tool_format.history_call_id

    def message(m: ChatMessage) -> Any:
        if m.role == "system":
            return SystemMessage(content=m.content)
        if m.role == "user":
            return UserMessage(content=m.content)
        if m.role == "tool":
            return ToolMessage(content=m.content, tool_call_id=mapped(m.tool_call_id))
        calls = [
            MistralToolCall(
                id=mapped(c.id),
                function=FunctionCall(name=c.name, arguments=json.dumps(c.arguments)),
            )
            for c in m.tool_calls
        ]
        return AssistantMessage(content=m.content or None, tool_calls=calls or None)

    def encode(messages: list[ChatMessage], tools: list[FunctionTool]) -> list[int]:
        request: Any = ChatCompletionRequest(
            messages=[message(m) for m in messages],
            tools=[
                Tool(
                    function=Function(
                        name=t.name, description=t.description, parameters=t.parameters
                    )
                )
                for t in tools
            ]
            or None,
        )
        return list(reference.encode_chat_completion(request).tokens)

    return encode


def test_mistral_tools_match_mistral_common(
    mistral_tokenizer: ModelTokenizer, mistral_common_encode: Encoder
) -> None:
    rnd = random.Random(1616)
    shapes = {"calls": 0, "ends_with_results": 0, "injected": 0}
    for _ in range(200):
        messages, tools = random_tool_conversation(rnd, injections=True)
        expected = mistral_common_encode(messages, tools)
        assert mistral_tokenizer.encode_chat(messages, tools) == expected, (messages, tools)
        shapes["calls"] += any(m.tool_calls for m in messages)
        shapes["ends_with_results"] += messages[-1].role == "tool"
        shapes["injected"] += any(
            c in json.dumps([m.content for m in messages]) for c in CONTROL_STRINGS
        )
    assert min(shapes.values()) > 30, shapes  # the sample exercised every shape


def test_mistral_tool_prompt_reference(mistral_tokenizer: ModelTokenizer) -> None:
    messages = [
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage(
            "assistant", "", tool_calls=(ToolCall("abcDEF123", "get_weather", {"city": "Paris"}),)
        ),
        ChatMessage("tool", '{"temp": 21}', tool_call_id="abcDEF123"),
    ]
    text = mistral_tokenizer.hf.decode(mistral_tokenizer.encode_chat(messages, [WEATHER]))
    assert text == (
        '<s>[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", '
        '"description": "The weather in a city.", "parameters": {"type": "object", "properties": '
        '{"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}]'
        "[/AVAILABLE_TOOLS][INST] Weather in Paris?[/INST]"
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, '
        '"id": "abcDEF123"}]</s>'
        '[TOOL_RESULTS] {"content": {"temp": 21}, "call_id": "abcDEF123"}[/TOOL_RESULTS]'
    )


def test_mistral_call_ids_are_mapped_deterministically(mistral_tokenizer: ModelTokenizer) -> None:
    tool_format = mistral_tokenizer.tool_format
    assert isinstance(tool_format, MistralToolFormat)
    mapped = tool_format.history_call_id("call_Zk3q9PDN2PmWc1Lx0aBcdEfG")
    assert len(mapped) == 9 and mapped.isalnum() and mapped.isascii()
    assert tool_format.history_call_id("call_Zk3q9PDN2PmWc1Lx0aBcdEfG") == mapped
    assert tool_format.history_call_id("call_other") != mapped
    assert tool_format.history_call_id("abcDEF123") == "abcDEF123"  # already valid: kept
    new = tool_format.new_call_id()
    assert len(new) == 9 and new.isalnum() and tool_format.history_call_id(new) == new


# -- Qwen2.5 -----------------------------------------------------------------------------


def hf_tool_template_ids(
    tok: ModelTokenizer, messages: list[ChatMessage], tools: list[FunctionTool]
) -> list[int]:
    """What plain transformers does with OpenAI-shaped messages (arguments parsed, as HF asks)."""
    hf_messages: list[dict[str, Any]] = []
    for m in messages:
        message: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in m.tool_calls
            ]
        if m.role == "tool":
            message["tool_call_id"] = m.tool_call_id
            message["name"] = m.name
        hf_messages.append(message)
    hf_tools: list[Any] = [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]
    out: Any = tok.hf.apply_chat_template(
        hf_messages, tools=hf_tools or None, tokenize=True, add_generation_prompt=True
    )
    return list(out["input_ids"])


def test_qwen_tools_match_hf_template(qwen2_tokenizer: ModelTokenizer) -> None:
    assert isinstance(qwen2_tokenizer.tool_format, TemplateToolFormat)
    rnd = random.Random(2516)
    with_results = 0
    for _ in range(150):
        messages, tools = random_tool_conversation(rnd, injections=False)
        assert qwen2_tokenizer.encode_chat(messages, tools) == hf_tool_template_ids(
            qwen2_tokenizer, messages, tools
        ), (messages, tools)
        with_results += any(m.role == "tool" for m in messages)
    assert with_results > 50


def test_qwen_tool_prompt_reference(qwen2_tokenizer: ModelTokenizer) -> None:
    messages = [
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage(
            "assistant", "", tool_calls=(ToolCall("call_1", "get_weather", {"city": "Paris"}),)
        ),
        ChatMessage("tool", '{"temp": 21}', tool_call_id="call_1"),
    ]
    text = str(qwen2_tokenizer.hf.decode(qwen2_tokenizer.encode_chat(messages, [WEATHER])))
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather", ' in text
    assert text.endswith(
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n"
    )


# -- generic -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generic_tokenizer(qwen2_tokenizer: ModelTokenizer) -> ModelTokenizer:
    """Qwen's vocabulary with a ChatML template that knows nothing of tools."""
    hf = copy.deepcopy(qwen2_tokenizer.hf)
    hf.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tok = ModelTokenizer(hf, qwen2_tokenizer.eos_token_ids)
    assert isinstance(tok.tool_format, GenericToolFormat)  # "auto" found no tool support
    return tok


def test_generic_format_is_the_documented_text(generic_tokenizer: ModelTokenizer) -> None:
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Weather in Paris and Rome?"),
        ChatMessage(
            "assistant",
            "",
            tool_calls=(
                ToolCall("call_1", "get_weather", {"city": "Paris"}),
                ToolCall("call_2", "get_weather", {"city": "Rome"}),
            ),
        ),
        ChatMessage("tool", "21 C", tool_call_id="call_1"),
        ChatMessage("tool", "25 C", tool_call_id="call_2"),
    ]
    ids = generic_tokenizer.encode_chat(messages, [WEATHER])
    schema = json.dumps(WEATHER.parameters)
    assert generic_tokenizer.hf.decode(ids) == (
        "<|im_start|>system\nBe brief.\n\n"
        "You can call functions to help with the user's request. The functions, each with its "
        "parameters as a JSON Schema, are:\n<tools>\n"
        '{"name": "get_weather", "description": "The weather in a city.", '
        f'"parameters": {schema}}}\n'
        "</tools>\nTo call a function, reply with "
        '<tool_call>{"name": <function name>, "arguments": <arguments as a JSON object>}'
        "</tool_call> (one block per call). The results come back in "
        "<tool_response></tool_response> blocks."
        "<|im_end|>\n<|im_start|>user\nWeather in Paris and Rome?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}'
        '</tool_call><tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
        "<|im_end|>\n<|im_start|>user\n<tool_response>21 C</tool_response>\n"
        "<tool_response>25 C</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )


def test_tool_format_can_be_chosen(qwen2_tokenizer: ModelTokenizer) -> None:
    tok = ModelTokenizer(qwen2_tokenizer.hf, qwen2_tokenizer.eos_token_ids, "generic")
    assert isinstance(tok.tool_format, GenericToolFormat)
    with pytest.raises(ValueError, match="Mistral v3 control tokens"):
        ModelTokenizer(qwen2_tokenizer.hf, qwen2_tokenizer.eos_token_ids, "mistral")


# -- injection ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["mistral_tokenizer", "qwen2_tokenizer", "generic_tokenizer"])
@pytest.mark.parametrize("place", ["description", "property", "argument", "result", "name"])
def test_tool_text_never_becomes_control_tokens(
    request: pytest.FixtureRequest, model: str, place: str
) -> None:
    tok: ModelTokenizer = request.getfixturevalue(model)
    controls = special_ids(tok)

    def conversation(payload: str) -> tuple[list[ChatMessage], list[FunctionTool]]:
        tool = FunctionTool(
            name="lookup",
            description=payload if place == "description" else "Looks up.",
            parameters={
                "type": "object",
                "properties": {payload if place == "property" else "q": {}},
            },
        )
        call = ToolCall("call_1", "lookup", {"q": payload if place == "argument" else "x"})
        messages = [
            ChatMessage("user", "go"),
            ChatMessage("assistant", "", tool_calls=(call,)),
            ChatMessage(
                "tool",
                payload if place == "result" else "ok",
                tool_call_id="call_1",
                name=payload if place == "name" else "lookup",
            ),
        ]
        return messages, [tool]

    baseline = [i for i in tok.encode_chat(*conversation("plain text")) if i in controls]
    for payload in CONTROL_STRINGS:
        ids = tok.encode_chat(*conversation(f"before {payload} after"))
        assert [i for i in ids if i in controls] == baseline, payload
