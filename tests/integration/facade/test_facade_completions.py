"""POST /v1/completions through the official openai SDK, and context overflows through LiteLLM."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import MISTRAL_ID, TINY_CONTEXT
from tests.integration.facade.conftest import TORCH_ONLY, FacadeServerThread, Keys

pytestmark = TORCH_ONLY

PROMPT = "The quick brown fox jumps over the lazy dog"
# The tiny checkpoints are random: without ignore_eos an early EOS could end any test early.
NO_EOS: dict[str, Any] = {"ignore_eos": True}


def test_completion_has_the_openai_shape_and_16_tokens_by_default(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=MISTRAL_ID, prompt=PROMPT, extra_body=NO_EOS)
    assert completion.id.startswith("cmpl-") and completion.object == "text_completion"
    [choice] = completion.choices
    assert choice.index == 0 and choice.text and choice.logprobs is None
    assert choice.finish_reason == "length"
    usage = completion.usage
    assert usage is not None and usage.completion_tokens == 16  # OpenAI's default max_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_prompts_each_get_n_choices_numbered_as_openai_does(client: openai.OpenAI) -> None:
    greedy: dict[str, Any] = {"max_tokens": 3, "temperature": 0, "extra_body": NO_EOS}
    completion = client.completions.create(
        model=MISTRAL_ID, prompt=[PROMPT, "Once upon a time"], n=2, **greedy
    )
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    texts = [c.text for c in completion.choices]
    assert texts[0] == texts[1] and texts[2] == texts[3]  # greedy: a prompt's choices agree
    alone = [
        client.completions.create(model=MISTRAL_ID, prompt=prompt, **greedy)
        for prompt in (PROMPT, "Once upon a time")
    ]
    assert [texts[0], texts[2]] == [a.choices[0].text for a in alone]
    assert completion.usage is not None and completion.usage.completion_tokens == 12
    assert completion.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone if a.usage)
    # Token-id prompts, one or several.
    ids = client.completions.create(model=MISTRAL_ID, prompt=[[1, 851, 349], [1, 851]], **greedy)
    assert ids.usage is not None and ids.usage.prompt_tokens == 5
    one = client.completions.create(model=MISTRAL_ID, prompt=[1, 851, 349], **greedy)
    assert one.choices[0].text == ids.choices[0].text


def test_stream_matches_the_whole_reply_with_usage_last(client: openai.OpenAI) -> None:
    args: dict[str, Any] = {
        "model": MISTRAL_ID,
        "prompt": [PROMPT, "Once upon a time"],
        "max_tokens": 5,
        "temperature": 0,
        "logprobs": 2,
        "extra_body": NO_EOS,
    }
    whole = client.completions.create(**args)
    chunks = list(
        client.completions.create(stream=True, stream_options={"include_usage": True}, **args)
    )
    assert all(chunk.object == "text_completion" for chunk in chunks)
    texts = ["", ""]
    tokens: list[list[str]] = [[], []]
    finishes: dict[int, str | None] = {}
    for chunk in chunks[:-1]:
        assert chunk.usage is None
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.logprobs is not None:
                tokens[choice.index] += choice.logprobs.tokens or []
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == [c.text for c in whole.choices]
    assert tokens == [c.logprobs.tokens for c in whole.choices if c.logprobs]
    assert finishes == {0: "length", 1: "length"}
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_logprobs_come_in_the_legacy_shape(client: openai.OpenAI) -> None:
    # Greedy: a random checkpoint may sample a control token, which the text skips and
    # `tokens` lists, and then the two would not join up.
    completion = client.completions.create(
        model=MISTRAL_ID, prompt=PROMPT, max_tokens=4, logprobs=3, temperature=0, extra_body=NO_EOS
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs
    assert logprobs.top_logprobs and logprobs.text_offset
    assert len(logprobs.tokens) == 4 and "".join(logprobs.tokens) == completion.choices[0].text
    assert all(lp is not None and lp <= 0 for lp in logprobs.token_logprobs)
    assert all(top is not None and 1 <= len(top) <= 3 for top in logprobs.top_logprobs)
    offsets = [sum(len(t) for t in logprobs.tokens[:i]) for i in range(4)]
    assert logprobs.text_offset == offsets


def test_echo_with_logprobs_and_no_completion_scores_the_prompt(client: openai.OpenAI) -> None:
    # What lm-evaluation-harness loglikelihood asks: echo, logprobs, max_tokens 0.
    completion = client.completions.create(
        model=MISTRAL_ID, prompt=PROMPT, echo=True, logprobs=1, max_tokens=0
    )
    [choice] = completion.choices
    assert choice.text == PROMPT and choice.finish_reason == "length"
    logprobs = choice.logprobs
    assert logprobs is not None and logprobs.token_logprobs and logprobs.top_logprobs
    assert completion.usage is not None and completion.usage.completion_tokens == 0
    assert len(logprobs.token_logprobs) == completion.usage.prompt_tokens
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert all(lp is not None and lp <= 0 for lp in logprobs.token_logprobs[1:])
    assert logprobs.text_offset == sorted(logprobs.text_offset)
    # Echo with a completion: the prompt's text, then the generated text after it.
    echoed = client.completions.create(
        model=MISTRAL_ID, prompt=PROMPT, echo=True, max_tokens=3, extra_body=NO_EOS
    )
    assert echoed.choices[0].text.startswith(PROMPT) and len(echoed.choices[0].text) > len(PROMPT)


@pytest.mark.parametrize(
    ("args", "param"),
    [
        ({"best_of": 3}, "best_of"),
        ({"suffix": "}"}, "suffix"),
        ({"logprobs": 6}, "logprobs"),
        ({"max_tokens": 0}, "max_tokens"),  # 0 only with echo
        ({"prompt": []}, "prompt"),
    ],
)
def test_refusals_name_the_param(client: openai.OpenAI, args: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(**{"model": MISTRAL_ID, "prompt": PROMPT, **args})
    assert info.value.param == param and param in info.value.message


def test_context_overflow_in_openais_words(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MISTRAL_ID, prompt="word " * TINY_CONTEXT, max_tokens=8)
    assert info.value.code == "context_length_exceeded" and info.value.param == "prompt"
    assert (
        f"This model's maximum context length is {TINY_CONTEXT} tokens. However, you requested "
        in info.value.message
    )
    assert "in the prompt, 8 in the completion)" in info.value.message


@pytest.mark.parametrize("route", ["chat", "text"])
def test_litellm_raises_its_context_window_error(
    facade: FacadeServerThread, facade_keys: Keys, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LiteLLM keys its ContextWindowExceededError (and context_window_fallbacks) on OpenAI's
    # wording; an OpenAI-compatible server that words it otherwise gets a plain BadRequestError.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # its bundled copy: no network
    litellm = pytest.importorskip("litellm")
    common: dict[str, Any] = {
        "model": f"openai/{MISTRAL_ID}",
        "api_base": f"{facade.url}/v1",
        "api_key": facade_keys.full,
        "max_tokens": 8,
        "num_retries": 0,
    }
    long = "word " * TINY_CONTEXT
    with pytest.raises(litellm.ContextWindowExceededError):
        if route == "chat":
            litellm.completion(messages=[{"role": "user", "content": long}], **common)
        else:
            litellm.text_completion(prompt=long, **common)


def test_completions_route_needs_a_key(facade: FacadeServerThread) -> None:
    response = httpx.post(f"{facade.url}/v1/completions", json={"model": MISTRAL_ID})
    assert response.status_code == 401
