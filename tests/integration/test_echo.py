"""GenerateRequest.echo: the prompt back in each choice's first Delta, scored with logprobs.

What the completions route's `echo` and evaluation harnesses (lm-evaluation-harness
loglikelihood: echo, logprobs, max_tokens 0) stand on.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tensorchat.request_error import PARAM_METADATA_KEY
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.integration.conftest import MISTRAL_ID
from tests.support.servers import InferenceServerThread

PROMPT = "The quick brown fox jumps over the lazy dog"


def run(stub: pb_grpc.InferenceStub, **fields: Any) -> list[pb.GenerateResponse]:
    fields.setdefault("model", MISTRAL_ID)
    return list(stub.Generate(pb.GenerateRequest(**fields), timeout=60))


def refusal(stub: pb_grpc.InferenceStub, **fields: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        run(stub, **fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


def greedy(max_tokens: int) -> dict[str, Any]:
    return {
        "sampling": pb.SamplingParams(temperature=0.0),
        "stopping": pb.StoppingCriteria(max_tokens=max_tokens, ignore_eos=True),
    }


def is_torch(server: InferenceServerThread) -> bool:
    return server.model(MISTRAL_ID).config.engine == "torch"


def test_echo_returns_the_prompt_text_once_per_choice(stub: pb_grpc.InferenceStub) -> None:
    ids = stub.Tokenize(pb.TokenizeRequest(model=MISTRAL_ID, prompt=PROMPT)).token_ids
    for fields in ({"prompt": PROMPT}, {"token_ids": pb.TokenIds(ids=ids)}):
        responses = run(stub, echo=True, n=2, **greedy(3), **fields)
        for index in (0, 1):
            deltas = [r.delta for r in responses if r.index == index and r.HasField("delta")]
            assert [d.HasField("prompt") for d in deltas][:1] == [True]
            assert not any(d.HasField("prompt") for d in deltas[1:])
            assert PROMPT in deltas[0].prompt.text  # token ids decode with their <s>
            assert not deltas[0].prompt.logprobs  # none asked for
            assert sum(len(d.token_ids) for d in deltas) == 3


def test_scoring_a_prompt_matches_the_logprobs_of_generating_it(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    # What a loglikelihood harness relies on: the prompt's logprobs are those the model gives
    # the same tokens when it generates them.
    if not is_torch(inference_server):
        error = refusal(stub, prompt=PROMPT, echo=True, logprobs=True, **greedy(0))
        assert (PARAM_METADATA_KEY, "echo") in tuple(error.trailing_metadata())
        assert "--gather_context_logits" in str(error.details())
        return
    ids = list(stub.Tokenize(pb.TokenizeRequest(model=MISTRAL_ID, prompt=PROMPT)).token_ids)
    generated = run(stub, token_ids=pb.TokenIds(ids=ids), logprobs=True, **greedy(4))
    continuation = [lp for r in generated if r.HasField("delta") for lp in r.delta.logprobs]
    scored = run(
        stub,
        token_ids=pb.TokenIds(ids=ids + [lp.token_id for lp in continuation]),
        echo=True,
        logprobs=True,
        top_logprobs=2,
        **greedy(0),
    )
    assert [r.WhichOneof("kind") for r in scored] == ["delta", "finished"]
    delta, finished = scored[0].delta, scored[1].finished
    assert not delta.text and not delta.token_ids  # max_tokens 0: nothing generated
    prompt = delta.prompt.logprobs
    assert [lp.token_id for lp in prompt] == ids + [lp.token_id for lp in continuation]
    assert prompt[0].logprob == 0 and not prompt[0].top_logprobs  # nothing precedes it
    assert all(len(lp.top_logprobs) == 2 for lp in prompt[1:])
    for mine, theirs in zip(prompt[len(ids) :], continuation, strict=True):
        assert mine.logprob == pytest.approx(theirs.logprob, abs=1e-3)
        assert mine.top_logprobs[0].token_id == mine.token_id  # greedy picked the best
    assert finished.reason == pb.FINISH_REASON_LENGTH
    assert finished.usage.completion_tokens == 0
    assert finished.usage.prompt_tokens == len(prompt)


@pytest.mark.parametrize(
    ("param", "fields"),
    [
        (
            "echo",
            {
                "echo": True,
                "messages": pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="hi")]),
            },
        ),
        ("max_tokens", {"prompt": PROMPT, "stopping": pb.StoppingCriteria(max_tokens=0)}),
    ],
)
def test_echo_refusals_name_the_field(
    stub: pb_grpc.InferenceStub, param: str, fields: dict[str, Any]
) -> None:
    error = refusal(stub, **fields)
    assert (PARAM_METADATA_KEY, param) in tuple(error.trailing_metadata())
