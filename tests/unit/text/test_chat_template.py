"""ChatTemplate renders exactly what transformers' apply_chat_template renders, on every real
template of the tests, for the very inputs the encoder renders (plain and marked); and the
encoder's cache of template-text ids is exact, position-aware and bounded."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from transformers import PreTrainedTokenizerFast

from inference.text import ChatMessage, ChatTemplateError, ModelTokenizer, chat_encoding
from inference.text.chat_template import ChatTemplate
from inference.text.tool_format import GenericToolFormat, template_conversation
from tests.unit.text.test_chat_encoding import random_conversation
from tests.unit.text.test_tool_prompts import random_tool_conversation

# The default model's (SmolLM2-135M-Instruct's) template: a default system prompt in template
# text, as the service's benchmarks render it.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def with_template(tok: ModelTokenizer, template: str | dict[str, str]) -> PreTrainedTokenizerFast:
    hf = copy.deepcopy(tok.hf)
    hf.chat_template = template
    return hf


def unmarked(text: str) -> str:
    return text


def marked(text: str) -> str:
    return "\ufdd0" + text + "\ufdd1" if text.strip() else text


def reference(hf: PreTrainedTokenizerFast, messages: Any, tools: Any) -> str:
    out = hf.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    assert isinstance(out, str)
    return out


def assert_renders_agree(hf: PreTrainedTokenizerFast, conversations: list[Any]) -> None:
    template = ChatTemplate(hf)
    for build in conversations:
        for mark in (unmarked, marked):
            messages, tools = build(mark)
            expected = reference(hf, copy.deepcopy(messages), copy.deepcopy(tools))
            assert template.render(messages, tools) == expected, (messages, tools)


@pytest.mark.parametrize("model", ["mistral", "qwen2"])
def test_the_models_own_templates_render_as_transformers_does(
    request: pytest.FixtureRequest, model: str
) -> None:
    tok: ModelTokenizer = request.getfixturevalue(f"{model}_tokenizer")
    rnd = random.Random(2020)
    conversations = [
        tok.tool_format.conversation(random_conversation(rnd, injections=True), ())
        for _ in range(60)
    ]
    assert_renders_agree(tok.hf, conversations)


def test_qwen_renders_tools_as_transformers_does(qwen2_tokenizer: ModelTokenizer) -> None:
    rnd = random.Random(2021)
    conversations = [
        template_conversation(*random_tool_conversation(rnd, injections=True)) for _ in range(60)
    ]
    assert_renders_agree(qwen2_tokenizer.hf, conversations)


def test_the_default_models_template_renders_as_transformers_does(
    qwen2_tokenizer: ModelTokenizer,
) -> None:
    hf = with_template(qwen2_tokenizer, SMOLLM2_TEMPLATE)
    rnd = random.Random(2022)
    conversations = [
        GenericToolFormat().conversation(*random_tool_conversation(rnd, injections=True))
        for _ in range(60)
    ]
    assert_renders_agree(hf, conversations)


def test_a_dict_of_templates_picks_the_tool_template_as_transformers_does(
    qwen2_tokenizer: ModelTokenizer,
) -> None:
    hf = with_template(
        qwen2_tokenizer,
        {
            "default": "{% for m in messages %}{{ m.content }}{% endfor %}",
            "tool_use": "{{ tools | length }} tools: {% for m in messages %}{{ m.content }}"
            "{% endfor %}",
        },
    )
    messages = [{"role": "user", "content": "hi"}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    template = ChatTemplate(hf)
    assert template.render(messages, None) == reference(hf, messages, None) == "hi"
    assert template.render(messages, tools) == reference(hf, messages, tools) == "1 tools: hi"


def test_template_rejections_and_a_missing_template_are_chat_template_errors(
    mistral_tokenizer: ModelTokenizer,
) -> None:
    alternating = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(ChatTemplateError, match="must alternate"):
        ChatTemplate(mistral_tokenizer.hf).render(alternating, None)
    hf = with_template(mistral_tokenizer, "")
    with pytest.raises(ChatTemplateError, match="no chat template"):
        ChatTemplate(hf).render([{"role": "user", "content": "a"}], None)


# -- the cache of template-text ids ------------------------------------------------------


class CountingTokenizer:
    """Stands in for the encoder's Rust tokenizer and counts the texts it encodes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def encode(self, text: str, add_special_tokens: bool) -> Any:
        self.texts.append(text)
        return self.inner.encode(text, add_special_tokens=add_special_tokens)


def counted(tok: ModelTokenizer) -> tuple[ModelTokenizer, CountingTokenizer]:
    """A fresh copy of `tok` (its own empty cache) whose encoder's tokenizer calls are counted."""
    fresh = ModelTokenizer(copy.deepcopy(tok.hf), tok.eos_token_ids)
    encoder: Any = fresh._chat
    assert encoder._head is encoder._rest  # a ByteLevel tokenizer: one tokenizer for all text
    counter = CountingTokenizer(encoder._head)
    encoder._head = encoder._rest = counter
    return fresh, counter


def test_template_text_is_encoded_once_and_message_text_every_time(
    qwen2_tokenizer: ModelTokenizer,
) -> None:
    tok, counter = counted(qwen2_tokenizer)
    first = tok.encode_chat([ChatMessage("user", "Hi")])
    # The default system prompt, "\n" (its second time from the cache), "user\nHi" and
    # "assistant\n".
    assert counter.texts[1:] == ["\n", "user\nHi", "assistant\n"]
    counter.texts.clear()
    second = tok.encode_chat([ChatMessage("user", "Hello there")])
    assert counter.texts == ["user\nHello there"]  # the only piece with message text
    assert first == qwen2_tokenizer.encode_chat([ChatMessage("user", "Hi")])
    assert second == qwen2_tokenizer.encode_chat([ChatMessage("user", "Hello there")])


def test_cached_template_text_keeps_the_position_rule(mistral_tokenizer: ModelTokenizer) -> None:
    # Metaspace "first" prepends the word boundary at offset 0 only: the same template text
    # at the start and after a special token has different ids, each cached under its own key.
    hf = with_template(
        mistral_tokenizer,
        "Hello world<s>Hello world{% for m in messages %}[INST] {{ m.content }}[/INST]{% endfor %}",
    )
    tok = ModelTokenizer(hf, mistral_tokenizer.eos_token_ids)
    messages = [ChatMessage("user", "hi")]
    out: Any = hf.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=True, add_generation_prompt=True
    )
    expected = list(out["input_ids"])
    bos = expected.index(1)
    assert expected[:bos] != expected[bos + 1 : 2 * bos + 1]  # the two "Hello world" differ
    assert tok.encode_chat(messages) == expected
    assert tok.encode_chat(messages) == expected  # now from the cache


def test_the_cache_is_bounded(qwen2_tokenizer: ModelTokenizer) -> None:
    # Blank content is template text; a client can vary it without end.
    tok, counter = counted(qwen2_tokenizer)
    encoder: Any = tok._chat
    for n in range(chat_encoding.TEMPLATE_IDS_CACHE_SIZE + 50):
        tok.encode_chat([ChatMessage("system", " " * (n + 1)), ChatMessage("user", "hi")])
    assert encoder._cached_template_ids.cache_info().currsize == (
        chat_encoding.TEMPLATE_IDS_CACHE_SIZE
    )
    # Longer template text is encoded every time, never kept.
    long_blank = [ChatMessage("system", " " * (chat_encoding.TEMPLATE_IDS_MAX_CHARS + 1))]
    for _ in range(2):
        counter.texts.clear()
        tok.encode_chat([*long_blank, ChatMessage("user", "hi")])
        assert any(len(text) > chat_encoding.TEMPLATE_IDS_MAX_CHARS for text in counter.texts)
