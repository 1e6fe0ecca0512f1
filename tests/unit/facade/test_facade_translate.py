"""OpenAI request -> GenerateRequest mapping, and Generate responses -> completions and chunks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from facade.schemas import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from facade.translate import (
    FINISH_REASONS,
    ChunkEncoder,
    CompletionBuilder,
    UsageCounter,
    logprobs_content,
    to_generate_request,
)
from tensorchat.v1 import inference_pb2 as pb


def rpc(**fields: Any) -> pb.GenerateRequest:
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    req = ChatCompletionRequest.model_validate_json(json.dumps({"model": "Mistral", **fields}))
    return to_generate_request(
        req, "mistralai/Mistral-7B-Instruct-v0.3", "chatcmpl-1", time_limit_ms=1500
    )


def test_defaults_leave_optional_fields_unset() -> None:
    r = rpc()
    assert r.model == "mistralai/Mistral-7B-Instruct-v0.3"
    assert r.request_id == "chatcmpl-1"
    assert r.n == 1
    for name in ("temperature", "top_p", "seed", "repetition_penalty"):
        assert not r.sampling.HasField(name), name
    assert not r.stopping.HasField("max_tokens")
    assert r.stopping.time_limit_ms == 1500
    assert r.output == pb.OUTPUT_MODE_TEXT
    assert [(m.role, m.content) for m in r.messages.messages] == [("user", "hi")]


def test_every_sampling_parameter_is_mapped() -> None:
    r = rpc(
        temperature=0.7,
        top_p=0.9,
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"13": -100, "7": 5.5},
        top_k=40,
        min_p=0.05,
        repetition_penalty=1.2,
    )
    s = r.sampling
    assert s.temperature == pytest.approx(0.7)
    assert s.top_p == pytest.approx(0.9)
    assert s.seed == 42
    assert s.presence_penalty == pytest.approx(0.5)
    assert s.frequency_penalty == pytest.approx(-0.5)
    assert dict(s.logit_bias) == {13: -100.0, 7: 5.5}
    assert s.top_k == 40
    assert s.min_p == pytest.approx(0.05)
    assert s.repetition_penalty == pytest.approx(1.2)


def test_every_stopping_parameter_is_mapped() -> None:
    r = rpc(max_tokens=7, stop=["a", "bb"], min_tokens=3, ignore_eos=True, stop_token_ids=[2, 9])
    st = r.stopping
    assert st.max_tokens == 7
    assert list(st.stop) == ["a", "bb"]
    assert st.min_tokens == 3
    assert st.ignore_eos
    assert list(st.stop_token_ids) == [2, 9]
    assert list(rpc(stop="\n").stopping.stop) == ["\n"]
    assert rpc(max_tokens=7, max_completion_tokens=9).stopping.max_tokens == 9


def test_top_p_zero_means_the_single_most_likely_token() -> None:
    r = rpc(top_p=0)
    assert not r.sampling.HasField("top_p")
    assert r.sampling.top_k == 1
    assert rpc(top_p=1.0).sampling.top_p == 1.0


def test_top_k_minus_one_disables_top_k() -> None:
    assert rpc(top_k=-1).sampling.top_k == 0


def test_negative_seed_maps_to_a_stable_uint64() -> None:
    assert rpc(seed=-1).sampling.seed == 2**64 - 1
    assert rpc(seed=-1).sampling.seed == rpc(seed=-1).sampling.seed


def test_logprobs_n_and_roles() -> None:
    r = rpc(
        n=3,
        logprobs=True,
        top_logprobs=5,
        messages=[
            {"role": "developer", "content": "sys"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "u2"},
        ],
    )
    assert r.n == 3
    assert r.logprobs and r.top_logprobs == 5
    assert [m.role for m in r.messages.messages] == ["system", "user", "assistant", "user"]
    assert rpc(logprobs=False, top_logprobs=0).top_logprobs == 0


def test_finish_reasons_are_ones_openai_clients_accept() -> None:
    allowed = {"stop", "length", "tool_calls", "content_filter", "function_call"}
    assert set(FINISH_REASONS.values()) <= allowed
    assert FINISH_REASONS[pb.FINISH_REASON_STOP_SEQUENCE] == "stop"
    assert FINISH_REASONS[pb.FINISH_REASON_STOP_TOKEN] == "stop"
    assert FINISH_REASONS[pb.FINISH_REASON_LENGTH] == "length"
    assert FINISH_REASONS[pb.FINISH_REASON_TIME_LIMIT] == "length"
    # Every enum value of the proto has a mapping.
    assert set(FINISH_REASONS) == set(pb.FinishReason.values())


def parse_event(event: bytes) -> dict[str, Any]:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    data: dict[str, Any] = json.loads(event[6:-2])
    return data


@pytest.mark.parametrize("include_usage", [False, True])
def test_chunks_are_valid_openai_chunks(include_usage: bool) -> None:
    enc = ChunkEncoder("chatcmpl-x", 1700000000, 'we"ird/mo\\del', "fp_1", include_usage)
    tricky = 'quote " backslash \\ newline \n tab \t nul \x00 emoji 🙂 é \u2028'
    lp = logprobs_content(
        [
            pb.TokenLogprob(
                token="a",
                logprob=-0.5,
                bytes=b"a",
                top_logprobs=[pb.TopLogprob(token="b", logprob=-1)],
            )
        ]
    )
    events = [
        enc.role(0),
        enc.content(1, tricky, None),
        enc.content(0, "x", lp),
        enc.finish(1, "length"),
    ]
    parsed = [parse_event(e) for e in events]
    for data in parsed:
        chunk = ChatCompletionChunk.model_validate(data)
        assert chunk.id == "chatcmpl-x" and chunk.model == 'we"ird/mo\\del'
        assert chunk.created == 1700000000 and chunk.system_fingerprint == "fp_1"
        assert ("usage" in data) == include_usage and data.get("usage") is None
        assert len(chunk.choices) == 1
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert parsed[1]["choices"][0] == {
        "index": 1,
        "delta": {"content": tricky},
        "logprobs": None,
        "finish_reason": None,
    }
    assert parsed[2]["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0]["bytes"] == [98]
    assert parsed[3]["choices"][0] == {
        "index": 1,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }


def test_usage_chunk_has_empty_choices() -> None:
    usage = UsageCounter()
    usage.add(pb.Usage(prompt_tokens=10, completion_tokens=4, cached_tokens=2))
    usage.add(pb.Usage(prompt_tokens=10, completion_tokens=6, cached_tokens=2))
    data = parse_event(ChunkEncoder("c", 1, "m", "fp", True).usage(usage))
    assert data["choices"] == []
    assert data["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 10,
        "total_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 2},
    }
    ChatCompletionChunk.model_validate(data)


def test_logprobs_never_produce_invalid_json() -> None:
    content = logprobs_content([pb.TokenLogprob(token="é", logprob=float("-inf"))])
    assert content[0]["logprob"] == -9999.0
    assert content[0]["bytes"] == list("é".encode())
    json.dumps(content, allow_nan=False)


def test_completion_builder_assembles_interleaved_choices() -> None:
    builder = CompletionBuilder(n=2, want_logprobs=True)
    lp = pb.TokenLogprob(token="He", logprob=-0.1)
    for message in [
        pb.GenerateResponse(index=0, delta=pb.Delta(text="He", logprobs=[lp])),
        pb.GenerateResponse(index=1, delta=pb.Delta(text="Bo")),
        pb.GenerateResponse(index=0, delta=pb.Delta(text="llo")),
        pb.GenerateResponse(
            index=1,
            finished=pb.Finished(
                reason=pb.FINISH_REASON_LENGTH, usage=pb.Usage(prompt_tokens=5, completion_tokens=1)
            ),
        ),
        pb.GenerateResponse(
            index=0,
            finished=pb.Finished(
                reason=pb.FINISH_REASON_STOP_SEQUENCE,
                matched_stop="!",
                usage=pb.Usage(prompt_tokens=5, completion_tokens=2),
            ),
        ),
    ]:
        builder.add(message)
    data = builder.to_json("chatcmpl-1", 5, "model-as-named", "fp_x")
    completion = ChatCompletion.model_validate(data)
    assert [c.message.content for c in completion.choices] == ["Hello", "Bo"]
    assert [c.finish_reason for c in completion.choices] == ["stop", "length"]
    assert completion.usage.prompt_tokens == 5 and completion.usage.completion_tokens == 3
    assert completion.usage.total_tokens == 8
    assert completion.choices[0].logprobs is not None
    assert completion.choices[0].logprobs.content is not None
    assert [t.token for t in completion.choices[0].logprobs.content] == ["He"]
    assert completion.model == "model-as-named" and completion.object == "chat.completion"
