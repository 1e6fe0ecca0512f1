"""Generate over real gRPC on loopback: the torch engine with tiny Mistral and Qwen2 checkpoints."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest

from inference.prepare import MAX_PROMPT_CHARS_PER_TOKEN
from tensorchat.request_error import CODE_METADATA_KEY, PARAM_METADATA_KEY
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.integration.conftest import (
    MISTRAL_ID,
    QWEN_ID,
    TINY_CONTEXT,
    idle_tokens,
    wait_until_idle,
)
from tests.support.servers import InferenceServerThread

HELLO = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="Hello! Tell me a story.")])


@dataclass
class Choice:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[pb.TokenLogprob] = field(default_factory=list)
    deltas: int = 0
    finished: pb.Finished | None = None


def generate(stub: pb_grpc.InferenceStub, **fields: Any) -> dict[int, Choice]:
    fields.setdefault("model", MISTRAL_ID)
    if not any(key in fields for key in ("messages", "prompt", "token_ids")):
        fields["messages"] = HELLO
    choices = fold(stub.Generate(pb.GenerateRequest(**fields), timeout=60))
    assert all(choice.finished is not None for choice in choices.values())
    return choices


def fold(responses: Iterable[pb.GenerateResponse]) -> dict[int, Choice]:
    """Choices from a stream's messages, checking that nothing follows a choice's Finished."""
    choices: dict[int, Choice] = {}
    for response in responses:
        choice = choices.setdefault(response.index, Choice())
        assert choice.finished is None, "a message arrived after the choice's Finished"
        if response.HasField("delta"):
            choice.deltas += 1
            choice.text += response.delta.text
            choice.token_ids += response.delta.token_ids
            choice.logprobs += response.delta.logprobs
        else:
            assert response.HasField("finished")
            choice.finished = response.finished
    return choices


def greedy(max_tokens: int = 24, **stopping: Any) -> dict[str, Any]:
    return {
        "sampling": pb.SamplingParams(temperature=0.0),
        "stopping": pb.StoppingCriteria(max_tokens=max_tokens, ignore_eos=True, **stopping),
    }


@pytest.mark.parametrize("model", [MISTRAL_ID, QWEN_ID])
def test_stream_has_deltas_then_one_finished_and_text_matches_tokens(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread, model: str
) -> None:
    choices = generate(stub, model=model, **greedy(max_tokens=20))
    assert list(choices) == [0]
    choice = choices[0]
    assert choice.deltas >= 2, "tokens must stream, not arrive in one message"
    assert len(choice.token_ids) == 20
    assert choice.finished is not None
    assert choice.finished.reason == pb.FINISH_REASON_LENGTH
    assert choice.finished.usage.completion_tokens == 20
    tokenizer = inference_server.model(model).tokenizer
    assert choice.text == tokenizer.hf.decode(choice.token_ids, skip_special_tokens=True)
    count = stub.CountTokens(pb.TokenizeRequest(model=model, messages=HELLO))
    assert choice.finished.usage.prompt_tokens == count.count
    assert count.context_length == TINY_CONTEXT


def test_aliases_are_case_insensitive(stub: pb_grpc.InferenceStub) -> None:
    for name in ("qwen/Qwen2.5-Coder-7B-Instruct", "QWEN", "MistralAI/mistral-7b-instruct-v0.3"):
        choices = generate(stub, model=name, **greedy(max_tokens=2))
        assert len(choices[0].token_ids) == 2


def test_n_choices_each_finish_once(stub: pb_grpc.InferenceStub) -> None:
    choices = generate(
        stub,
        n=3,
        sampling=pb.SamplingParams(temperature=1.0, seed=7),
        stopping=pb.StoppingCriteria(max_tokens=12, ignore_eos=True),
    )
    assert sorted(choices) == [0, 1, 2]
    assert all(len(c.token_ids) == 12 for c in choices.values())
    assert len({tuple(c.token_ids) for c in choices.values()}) > 1, "choices must differ"


def test_stop_string_across_token_boundary(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    reference = generate(stub, **greedy(max_tokens=30))[0]
    tokenizer = inference_server.model(MISTRAL_ID).tokenizer
    # Character offset where each token's text ends; pick a token with at least two characters
    # and make the stop start inside it and end inside the next one.
    ends = [
        len(tokenizer.hf.decode(reference.token_ids[: i + 1], skip_special_tokens=True))
        for i in range(len(reference.token_ids))
    ]
    i = next(
        i for i in range(1, len(ends) - 1) if ends[i] - ends[i - 1] >= 2 and ends[i + 1] > ends[i]
    )
    stop = reference.text[ends[i] - 1 : ends[i] + 1]
    stopped = generate(stub, **greedy(max_tokens=30, stop=[stop]))[0]
    assert stopped.finished is not None
    assert stopped.finished.reason == pb.FINISH_REASON_STOP_SEQUENCE
    assert stopped.finished.matched_stop == stop
    assert stopped.text == reference.text[: reference.text.index(stop)]


def test_stop_token_id(stub: pb_grpc.InferenceStub) -> None:
    reference = generate(stub, **greedy(max_tokens=10))[0]
    stop_id = reference.token_ids[3]
    stopped = generate(stub, **greedy(max_tokens=10, stop_token_ids=[stop_id]))[0]
    assert stopped.finished is not None
    assert stopped.finished.reason == pb.FINISH_REASON_STOP_TOKEN
    assert stopped.finished.matched_stop_token_id == stop_id
    first = reference.token_ids.index(stop_id)
    assert stopped.token_ids == reference.token_ids[: first + 1]


def test_logprobs(stub: pb_grpc.InferenceStub) -> None:
    choice = generate(stub, logprobs=True, top_logprobs=3, **greedy(max_tokens=5))[0]
    assert [item.token_id for item in choice.logprobs] == choice.token_ids
    for item in choice.logprobs:
        assert item.logprob <= 0.0
        assert len(item.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert item.top_logprobs[0].token_id == item.token_id
        assert item.top_logprobs[0].logprob == pytest.approx(item.logprob, abs=1e-4)


def test_output_modes(stub: pb_grpc.InferenceStub) -> None:
    text_only = generate(stub, output=pb.OUTPUT_MODE_TEXT, **greedy(max_tokens=6))[0]
    tokens_only = generate(stub, output=pb.OUTPUT_MODE_TOKENS, **greedy(max_tokens=6))[0]
    assert text_only.text and not text_only.token_ids
    assert len(tokens_only.token_ids) == 6 and not tokens_only.text


def test_prompt_and_token_ids_inputs(stub: pb_grpc.InferenceStub) -> None:
    ids = stub.Tokenize(pb.TokenizeRequest(model=MISTRAL_ID, messages=HELLO)).token_ids
    by_messages = generate(stub, **greedy(max_tokens=8))[0]
    by_ids = generate(stub, token_ids=pb.TokenIds(ids=ids), **greedy(max_tokens=8))[0]
    assert by_ids.token_ids == by_messages.token_ids
    by_prompt = generate(stub, prompt="Once upon a time", **greedy(max_tokens=4))[0]
    assert len(by_prompt.token_ids) == 4


def test_seed_reproducible_alone_and_in_a_busy_batch(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    seeded = {
        "sampling": pb.SamplingParams(temperature=1.0, top_p=0.9, seed=1234),
        "stopping": pb.StoppingCriteria(max_tokens=16, ignore_eos=True),
    }
    alone = generate(stub, **seeded)[0].token_ids
    assert generate(stub, **seeded)[0].token_ids == alone

    results: list[list[int]] = []
    noise_done = threading.Event()

    def noise() -> None:
        with grpc.insecure_channel(inference_server.address) as channel:
            noise_stub = pb_grpc.InferenceStub(channel)
            while not noise_done.is_set():
                generate(
                    noise_stub,
                    sampling=pb.SamplingParams(temperature=1.0),
                    stopping=pb.StoppingCriteria(max_tokens=5, ignore_eos=True),
                )

    workers = [threading.Thread(target=noise) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.2)
        for _ in range(2):
            results.append(generate(stub, **seeded)[0].token_ids)
    finally:
        noise_done.set()
        for worker in workers:
            worker.join()
    assert results == [alone, alone]


def test_concurrent_requests_interleave(inference_server: InferenceServerThread) -> None:
    timelines: dict[int, list[float]] = {}

    def run(slot: int) -> None:
        with grpc.insecure_channel(inference_server.address) as channel:
            stream = pb_grpc.InferenceStub(channel).Generate(
                pb.GenerateRequest(model=MISTRAL_ID, messages=HELLO, **greedy(max_tokens=40)),
                timeout=60,
            )
            timelines[slot] = [time.monotonic() for _ in stream]

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(timelines) == 4
    first_end = min(times[-1] for times in timelines.values())
    last_start = max(times[0] for times in timelines.values())
    assert last_start < first_end, "requests were served one after another, not batched"


def test_cancelled_call_leaves_the_batch(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    tokens_before = idle_tokens(inference_server)
    call = stub.Generate(
        pb.GenerateRequest(model=MISTRAL_ID, messages=HELLO, **greedy(max_tokens=200)),
        timeout=60,
    )
    responses = cast(Iterator[pb.GenerateResponse], call)
    next(responses)
    next(responses)
    assert inference_server.active_requests() >= 1
    call.cancel()
    # It left the batch before its 200 tokens.
    assert idle_tokens(inference_server) - tokens_before < 200


def test_a_running_request_id_is_refused_on_every_engine(stub: pb_grpc.InferenceStub) -> None:
    request = pb.GenerateRequest(
        request_id="same", model=MISTRAL_ID, messages=HELLO, **greedy(max_tokens=200)
    )
    first = stub.Generate(request, timeout=60)
    next(cast(Iterator[pb.GenerateResponse], first))
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.Generate(request, timeout=60))
    error = cast(grpc.Call, raised.value)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (PARAM_METADATA_KEY, "request_id") in tuple(error.trailing_metadata() or ())
    first.cancel()


def test_expired_deadline(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stub.Generate(
            pb.GenerateRequest(model=MISTRAL_ID, messages=HELLO, **greedy(max_tokens=200)),
            timeout=0.3,
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until_idle(inference_server)


def test_time_limit_finishes_with_partial_output(stub: pb_grpc.InferenceStub) -> None:
    choice = generate(stub, **greedy(max_tokens=200, time_limit_ms=200))[0]
    assert choice.finished is not None
    assert choice.finished.reason == pb.FINISH_REASON_TIME_LIMIT
    assert 0 < len(choice.token_ids) < 200


def test_unknown_model_is_not_found(stub: pb_grpc.InferenceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub, model="no-such/model")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModel(pb.GetModelRequest(model="no-such/model"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


INVALID_REQUESTS = [
    ("temperature", {"sampling": pb.SamplingParams(temperature=2.5)}),
    ("temperature", {"sampling": pb.SamplingParams(temperature=-0.1)}),
    ("top_p", {"sampling": pb.SamplingParams(top_p=0.0)}),
    ("top_p", {"sampling": pb.SamplingParams(top_p=1.5)}),
    ("min_p", {"sampling": pb.SamplingParams(min_p=1.5)}),
    ("repetition_penalty", {"sampling": pb.SamplingParams(repetition_penalty=0.0)}),
    ("presence_penalty", {"sampling": pb.SamplingParams(presence_penalty=2.5)}),
    ("frequency_penalty", {"sampling": pb.SamplingParams(frequency_penalty=-3.0)}),
    ("logit_bias", {"sampling": pb.SamplingParams(logit_bias={5: 101.0})}),
    ("logit_bias", {"sampling": pb.SamplingParams(logit_bias={10_000_000: 1.0})}),
    ("max_tokens", {"stopping": pb.StoppingCriteria(max_tokens=0)}),
    ("min_tokens", {"stopping": pb.StoppingCriteria(max_tokens=5, min_tokens=6)}),
    ("stop", {"stopping": pb.StoppingCriteria(stop=[""])}),
    ("stop", {"stopping": pb.StoppingCriteria(stop=[str(i) for i in range(17)])}),
    ("stop_token_ids", {"stopping": pb.StoppingCriteria(stop_token_ids=[10_000_000])}),
    ("n", {"n": 17}),
    ("top_logprobs", {"logprobs": True, "top_logprobs": 21}),
    ("top_logprobs", {"top_logprobs": 2}),
    ("model", {"model": ""}),
    ("messages", {"messages": pb.ChatMessages()}),
    ("messages[0].role", {"messages": pb.ChatMessages(messages=[pb.ChatMessage(role="robot")])}),
    ("token_ids", {"token_ids": pb.TokenIds(ids=[10_000_000])}),
    ("prompt", {"prompt": ""}),
    ("tools[0].function.name", {"tools": pb.Tools(tools=[pb.Tool(name="get weather")])}),
    (
        "tools[0].function.parameters",
        {"tools": pb.Tools(tools=[pb.Tool(name="f", parameters="{")])},
    ),
    (
        "tools[0].function.description",
        {"tools": pb.Tools(tools=[pb.Tool(name="f", description="x" * 40_000)])},
    ),
    (
        "tools[0].function.parameters",
        {"tools": pb.Tools(tools=[pb.Tool(name="f", parameters=" " * 70_000 + "{}")])},
    ),
    ("tools", {"tools": pb.Tools(tools=[pb.Tool(name=f"f{i}") for i in range(129)])}),
    (
        "tool_choice",
        {
            "tools": pb.Tools(
                tools=[pb.Tool(name="f")],
                choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_FUNCTION, function_name="g"),
            )
        },
    ),
    (
        "messages[1].tool_call_id",
        {
            "messages": pb.ChatMessages(
                messages=[
                    pb.ChatMessage(role="user", content="hi"),
                    pb.ChatMessage(role="tool", content="42", tool_call_id="call_1"),
                ]
            )
        },
    ),
    (
        "messages[1].tool_calls[0].function.arguments",
        {
            "messages": pb.ChatMessages(
                messages=[
                    pb.ChatMessage(role="user", content="hi"),
                    pb.ChatMessage(
                        role="assistant",
                        tool_calls=[pb.ToolCall(id="call_1", name="f", arguments="{'a': 1}")],
                    ),
                ]
            )
        },
    ),
    (
        "constraint",
        {
            "tools": pb.Tools(tools=[pb.Tool(name="f")]),
            "constraint": pb.OutputConstraint(json_object=pb.JsonObject()),
        },
    ),
    # proto3 enums are open: a number no OutputMode names parses, and must be refused.
    ("output", {"output": 7}),
]


@pytest.mark.parametrize(
    ("param", "fields"), INVALID_REQUESTS, ids=[p for p, _ in INVALID_REQUESTS]
)
def test_invalid_parameter_names_the_field(
    stub: pb_grpc.InferenceStub, param: str, fields: dict[str, Any]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub, **fields)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error.details()).startswith(f"{param}: ")
    assert (PARAM_METADATA_KEY, param) in tuple(error.trailing_metadata())


def test_top_logprobs_are_refused_where_generation_logits_are_off(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    """trtllm: a model without `top_logprobs: true` refuses them, naming the field."""
    if inference_server.model(QWEN_ID).config.engine != "trtllm":
        assert generate(stub, model=QWEN_ID, logprobs=True, top_logprobs=2, **greedy(max_tokens=2))
        return
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub, model=QWEN_ID, logprobs=True, top_logprobs=2, **greedy(max_tokens=2))
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error.details()).startswith(
        f"top_logprobs: {QWEN_ID} does not serve top_logprobs: its generation logits are off"
    )
    assert (PARAM_METADATA_KEY, "top_logprobs") in tuple(error.trailing_metadata())
    # logprobs alone need no generation logits.
    assert generate(stub, model=QWEN_ID, logprobs=True, **greedy(max_tokens=2))[0].logprobs


def test_context_overflow_gives_both_numbers(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    # The longest prompt: the context on torch, the executor's max_seq_len - 1 on trtllm.
    model = inference_server.model(MISTRAL_ID)
    longest = model.max_input_tokens
    assert longest == (TINY_CONTEXT - 1 if model.config.engine == "trtllm" else TINY_CONTEXT)
    long_prompt = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="word " * 400)])
    prompt_tokens = stub.CountTokens(
        pb.TokenizeRequest(model=MISTRAL_ID, messages=long_prompt)
    ).count
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub, messages=long_prompt)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # OpenAI's words, which clients (LiteLLM) recognise a context overflow by.
    assert f"This model's maximum context length is {TINY_CONTEXT} tokens" in str(error.details())
    assert f"your messages resulted in {prompt_tokens} tokens" in str(error.details())
    assert (CODE_METADATA_KEY, "context_length_exceeded") in tuple(error.trailing_metadata())

    short = stub.CountTokens(pb.TokenizeRequest(model=MISTRAL_ID, messages=HELLO)).count
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub, stopping=pb.StoppingCriteria(max_tokens=TINY_CONTEXT - short + 1))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"({short} in the messages, {TINY_CONTEXT - short + 1} in the completion)" in str(
        caught.value.details()
    )

    # A raw prompt (the completions route) is "the prompt", in the words and in the param.
    with pytest.raises(grpc.RpcError) as caught:
        generate(
            stub,
            token_ids=pb.TokenIds(ids=[5] * TINY_CONTEXT),
            stopping=pb.StoppingCriteria(max_tokens=8),
        )
    assert f"({TINY_CONTEXT} in the prompt, 8 in the completion)" in str(caught.value.details())
    assert (PARAM_METADATA_KEY, "prompt") in tuple(caught.value.trailing_metadata())


def test_unset_max_tokens_means_up_to_the_context(stub: pb_grpc.InferenceStub) -> None:
    prompt = stub.CountTokens(pb.TokenizeRequest(model=QWEN_ID, messages=HELLO)).count
    choice = generate(
        stub,
        model=QWEN_ID,
        sampling=pb.SamplingParams(temperature=0.0),
        stopping=pb.StoppingCriteria(ignore_eos=True),
    )[0]
    assert choice.finished is not None
    assert choice.finished.reason == pb.FINISH_REASON_LENGTH
    assert len(choice.token_ids) == TINY_CONTEXT - prompt


def test_list_and_get_models(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    models = stub.ListModels(pb.ListModelsRequest()).models
    assert {m.id for m in models} == {MISTRAL_ID, QWEN_ID}
    info = stub.GetModel(pb.GetModelRequest(model="qwen/qwen2.5-coder-7b-instruct"))
    assert info.id == QWEN_ID
    assert info.context_length == TINY_CONTEXT
    assert info.engine == inference_server.model(QWEN_ID).config.engine


def test_stats_count_the_tokens_generated(stub: pb_grpc.InferenceStub) -> None:
    def generated() -> int:
        stats = {m.model: m for m in stub.GetStats(pb.GetStatsRequest()).models}
        return stats[MISTRAL_ID].generated_tokens

    before = generated()
    choices = generate(
        stub,
        model=MISTRAL_ID,
        n=2,
        output=pb.OUTPUT_MODE_TEXT_AND_TOKENS,
        sampling=pb.SamplingParams(temperature=0.0),
        stopping=pb.StoppingCriteria(max_tokens=7, ignore_eos=True),
    )
    assert [len(choice.token_ids) for choice in choices.values()] == [7, 7]
    assert generated() - before == 14


def test_health_and_reflection(inference_server: InferenceServerThread) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(inference_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tensorchat.v1.Inference"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(reflection.ServerReflectionInfo(iter([request])))
        names = {s.name for s in response.list_services_response.service}
        assert "tensorchat.v1.Inference" in names


@pytest.mark.parametrize("model", [MISTRAL_ID, QWEN_ID])
def test_tools_and_tool_history_are_shown_to_the_model(
    stub: pb_grpc.InferenceStub, model: str
) -> None:
    history = pb.ChatMessages(
        messages=[
            pb.ChatMessage(role="user", content="Weather in Paris?"),
            pb.ChatMessage(
                role="assistant",
                tool_calls=[pb.ToolCall(id="call_1", name="get_weather", arguments='{"c": 1}')],
            ),
            pb.ChatMessage(role="tool", content="21 C", tool_call_id="call_1"),
        ]
    )
    tools = pb.Tools(
        tools=[pb.Tool(name="get_weather", parameters='{"type": "object"}')],
        choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE),
    )
    plain = stub.CountTokens(pb.TokenizeRequest(model=model, messages=history)).count
    choices = generate(stub, model=model, messages=history, tools=tools, **greedy(6))
    finished = choices[0].finished
    assert finished is not None and finished.reason == pb.FINISH_REASON_LENGTH
    assert finished.usage.prompt_tokens > plain  # the tool list is in the prompt


def test_an_oversize_prompt_is_refused_before_it_is_templated_or_tokenized(
    stub: pb_grpc.InferenceStub,
    inference_server: InferenceServerThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = inference_server.model(MISTRAL_ID)
    encoded: list[int] = []
    encode_chat = model.tokenizer.encode_chat

    def counted(messages: Any, tools: Any = ()) -> list[int]:
        encoded.append(len(messages))
        return encode_chat(messages, tools)

    monkeypatch.setattr(model.tokenizer, "encode_chat", counted)
    too_long = "x" * (model.max_input_tokens * MAX_PROMPT_CHARS_PER_TOKEN + 1)
    huge = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content=too_long)])
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub, messages=huge)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (CODE_METADATA_KEY, "context_length_exceeded") in tuple(caught.value.trailing_metadata())
    # In OpenAI's words, which clients (LiteLLM) recognise, like every context overflow.
    details = str(caught.value.details())
    assert f"This model's maximum context length is {model.context_length} tokens" in details
    assert f"your messages hold {len(too_long)} characters" in details
    assert encoded == []  # refused by its length alone
    generate(stub, **greedy(max_tokens=2))  # a prompt under the bound is still tokenized
    assert encoded == [1]


def test_a_prompt_being_tokenized_holds_up_no_other_call(
    stub: pb_grpc.InferenceStub,
    inference_server: InferenceServerThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = inference_server.model(MISTRAL_ID)
    entered, release = threading.Event(), threading.Event()
    encode_chat = model.tokenizer.encode_chat

    def slow(messages: Any, tools: Any = ()) -> list[int]:  # a long prompt's tokenization
        entered.set()
        release.wait(30)
        return encode_chat(messages, tools)

    monkeypatch.setattr(model.tokenizer, "encode_chat", slow)
    held = threading.Thread(target=generate, args=(stub,), kwargs=greedy(max_tokens=2))
    held.start()
    try:
        assert entered.wait(30)
        # The service still answers while that prompt is being tokenized.
        listed = stub.ListModels(pb.ListModelsRequest(), timeout=5)
        assert MISTRAL_ID in [m.id for m in listed.models]
    finally:
        release.set()
        held.join(30)
