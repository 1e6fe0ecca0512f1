"""The official openai SDK (sync and async) and LangChain against the facade, over real HTTP."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.integration.conftest import MISTRAL_ID, QWEN_ID, TINY_CONTEXT
from tests.integration.facade.conftest import TORCH_ONLY, FacadeServerThread, Keys

pytestmark = TORCH_ONLY

HELLO: list[Any] = [{"role": "user", "content": "Hello! Tell me a story."}]
# The tiny checkpoints are random: without ignore_eos an early EOS could end any test early.
NO_EOS: dict[str, Any] = {"ignore_eos": True}


def test_completion_has_the_openai_shape(client: openai.OpenAI) -> None:
    # The seeds' clients send the lowercase spelling; the response echoes it as sent.
    model = "qwen/Qwen2.5-Coder-7B-Instruct"
    completion = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You write code."},
            {"role": "user", "content": "Write hello world."},
            {"role": "assistant", "content": "print('hello')"},
            {"role": "user", "content": "In C?"},
        ],
        max_tokens=6,
        extra_body=NO_EOS,
    )
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == model
    assert completion.created > 1_600_000_000
    assert completion.system_fingerprint and completion.system_fingerprint.startswith("fp_")
    [choice] = completion.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.message.content and choice.finish_reason == "length"
    assert choice.logprobs is None
    usage = completion.usage
    assert usage is not None and usage.completion_tokens == 6
    assert usage.prompt_tokens > 10  # the chat template wraps four messages
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_token_limit_ends_with_length(client: openai.OpenAI, limit: str) -> None:
    cap: dict[str, Any] = {limit: 5}
    completion = client.chat.completions.create(
        model=MISTRAL_ID, messages=HELLO, extra_body=NO_EOS, **cap
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5


def test_n_choices_differ_and_usage_sums_them(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MISTRAL_ID,
        messages=HELLO,
        n=3,
        max_tokens=8,
        temperature=1.0,
        seed=7,
        extra_body=NO_EOS,
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    texts = [c.message.content for c in completion.choices]
    assert len(set(texts)) > 1, texts
    assert completion.usage is not None and completion.usage.completion_tokens == 24


def test_stop_string_cuts_the_text_and_reports_stop(client: openai.OpenAI) -> None:
    args: dict[str, Any] = {
        "model": MISTRAL_ID,
        "messages": HELLO,
        "temperature": 0,
        "max_tokens": 16,
        "extra_body": NO_EOS,
    }
    full = client.chat.completions.create(**args).choices[0].message.content
    assert full and len(full) > 6
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    cut = client.chat.completions.create(**args, stop=[stop, "never-there"]).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.message.content == full[: full.find(stop)]


def test_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str | None:
        return (
            client.chat.completions.create(
                model=QWEN_ID,
                messages=HELLO,
                temperature=1.0,
                seed=seed,
                max_tokens=8,
                extra_body=NO_EOS,
            )
            .choices[0]
            .message.content
        )

    assert sample(1234) == sample(1234)
    assert len({sample(s) for s in (1, 2, 3)}) > 1


def test_logprobs(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MISTRAL_ID,
        messages=HELLO,
        max_tokens=4,
        logprobs=True,
        top_logprobs=3,
        extra_body=NO_EOS,
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert len(logprobs.content) == 4
    # (Token strings need not concatenate to the text: the detokenizer drops special tokens
    # and a leading space, as Hugging Face's does.)
    for token in logprobs.content:
        assert token.logprob <= 0.0 and len(token.top_logprobs) == 3
        assert token.bytes is not None and token.token
        assert token.top_logprobs[0].logprob >= token.top_logprobs[-1].logprob


def test_streaming_logprobs(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=QWEN_ID,
        messages=HELLO,
        max_tokens=5,
        stream=True,
        logprobs=True,
        top_logprobs=2,
        extra_body=NO_EOS,
    )
    count = 0
    for chunk in stream:
        choice = chunk.choices[0]
        if choice.logprobs is not None and choice.logprobs.content:
            for token in choice.logprobs.content:
                assert len(token.top_logprobs) == 2 and token.logprob <= 0.0
                count += 1
    assert count == 5


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MISTRAL_ID,
            messages=HELLO,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=NO_EOS,
        )
    )
    first, *content, final, usage_chunk = chunks
    assert first.choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.content for c in content)
    # The European provider's example prints a marker when delta.content is None (the end).
    assert final.choices[0].delta.content is None and final.choices[0].finish_reason == "length"
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 6
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" and c.model == MISTRAL_ID for c in chunks)


def test_streaming_n_choices_interleave(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=QWEN_ID, messages=HELLO, n=2, max_tokens=6, stream=True, extra_body=NO_EOS
    )
    order: list[tuple[int, str]] = []
    texts = {0: "", 1: ""}
    for chunk in stream:
        [choice] = chunk.choices
        kind = "finish" if choice.finish_reason else "role" if choice.delta.role else "text"
        order.append((choice.index, kind))
        texts[choice.index] += choice.delta.content or ""
    for index in (0, 1):
        kinds = [k for i, k in order if i == index]
        assert kinds[0] == "role" and kinds[-1] == "finish" and kinds.count("finish") == 1
    # Interleaved by index: choice 1 has text before choice 0 is finished.
    assert order.index((1, "text")) < order.index((0, "finish"))
    assert texts[0] and texts[1]


def test_stream_without_usage_ends_with_finish(client: openai.OpenAI) -> None:
    chunks: list[ChatCompletionChunk] = list(
        client.chat.completions.create(
            model=MISTRAL_ID, messages=HELLO, max_tokens=3, stream=True, extra_body=NO_EOS
        )
    )
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


@pytest.mark.parametrize(
    "base", ["/v1", "", "/api/v1", "/v1/chat/completions"], ids=["v1", "root", "api", "doubled"]
)
def test_every_base_url_works(facade: FacadeServerThread, facade_keys: Keys, base: str) -> None:
    client = openai.OpenAI(base_url=f"{facade.url}{base}", api_key=facade_keys.full, max_retries=0)
    completion = client.chat.completions.create(
        model="mistralai/Mistral-7B-Instruct-v0.3", messages=HELLO, max_tokens=2
    )
    assert completion.choices[0].message.role == "assistant"
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=MISTRAL_ID, messages=HELLO, max_tokens=2, stream=True
        )
        if c.choices
    )
    assert isinstance(streamed, str)


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert ids == {MISTRAL_ID, QWEN_ID}
    model = client.models.retrieve("qwen/qwen2.5-coder-7b-instruct")
    assert model.id == QWEN_ID and model.owned_by == "Qwen" and model.object == "model"


def test_auth_error(facade: FacadeServerThread) -> None:
    bad = openai.OpenAI(base_url=f"{facade.url}/v1", api_key="tc-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model=MISTRAL_ID, messages=HELLO)
    assert info.value.code == "invalid_api_key" and info.value.type == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert info.value.code == "model_not_found" and info.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


@pytest.mark.parametrize(
    ("args", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0].type"),
        ({"max_tokens": 10**6}, "max_tokens"),
    ],
)
def test_bad_request_names_the_param(
    client: openai.OpenAI, args: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MISTRAL_ID, messages=HELLO, **args)
    assert info.value.param == param and info.value.type == "invalid_request_error"


@pytest.mark.parametrize("words", [TINY_CONTEXT * 2, TINY_CONTEXT // 2])
def test_context_overflow(client: openai.OpenAI, words: int) -> None:
    # Either the prompt alone is too long, or prompt + max_tokens does not fit.
    long: list[Any] = [{"role": "user", "content": "word " * words}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MISTRAL_ID, messages=long, max_tokens=TINY_CONTEXT - 10
        )
    assert info.value.code == "context_length_exceeded" and info.value.param == "messages"
    assert str(TINY_CONTEXT) in info.value.message


def test_rate_limit(facade: FacadeServerThread, facade_keys: Keys) -> None:
    limited = openai.OpenAI(base_url=f"{facade.url}/v1", api_key=facade_keys.limited, max_retries=0)
    limited.chat.completions.create(model=MISTRAL_ID, messages=HELLO, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as info:
        limited.chat.completions.create(model=MISTRAL_ID, messages=HELLO, max_tokens=1)
    assert info.value.code == "rate_limit_exceeded" and info.value.type == "rate_limit_error"
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60


def test_key_restricted_to_one_model(facade: FacadeServerThread, facade_keys: Keys) -> None:
    coder = openai.OpenAI(base_url=f"{facade.url}/v1", api_key=facade_keys.qwen_only, max_retries=0)
    assert [m.id for m in coder.models.list()] == [QWEN_ID]
    coder.chat.completions.create(model="qwen", messages=HELLO, max_tokens=1)
    with pytest.raises(openai.NotFoundError):
        coder.chat.completions.create(model=MISTRAL_ID, messages=HELLO, max_tokens=1)


async def test_async_client(aclient: openai.AsyncOpenAI) -> None:
    completion = await aclient.chat.completions.create(
        model=MISTRAL_ID, messages=HELLO, max_tokens=4, extra_body=NO_EOS
    )
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    stream = await aclient.chat.completions.create(
        model=QWEN_ID,
        messages=HELLO,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=NO_EOS,
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    with pytest.raises(openai.NotFoundError):
        await aclient.chat.completions.create(model="nope", messages=HELLO)


def test_langchain_invoke_and_stream(facade: FacadeServerThread, facade_keys: Keys) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="qwen/Qwen2.5-Coder-7B-Instruct",
        base_url=f"{facade.url}/v1",
        api_key=facade_keys.full,  # type: ignore[arg-type]
        max_completion_tokens=5,
        max_retries=0,
        extra_body=NO_EOS,
        stream_usage=True,  # sends stream_options.include_usage
    )
    reply = llm.invoke([("system", "You are terse."), ("human", "Hi")])
    assert isinstance(reply.content, str) and reply.content
    assert reply.response_metadata["finish_reason"] == "length"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 5
    pieces = list(llm.stream("Hello"))
    total = pieces[0]
    for piece in pieces[1:]:
        total += piece
    assert isinstance(total.content, str) and total.content
    assert total.response_metadata["finish_reason"] == "length"
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] == 5
