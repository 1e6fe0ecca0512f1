"""Constrained output over real gRPC on both engines (torch, and trtllm over the fake executor,
which enforces the guide with real xgrammar): every output that the grammar let end follows it."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any, cast

import grpc
import jsonschema
import pytest

from inference.grammar import GrammarCompiler
from tensorchat.request_error import PARAM_METADATA_KEY
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.integration.conftest import MISTRAL_ID, QWEN_ID, idle_tokens
from tests.integration.test_generate import HELLO, Choice, generate
from tests.support.servers import InferenceServerThread

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user"]},
    },
    "required": ["name", "age", "role"],
    "additionalProperties": False,
}
MODELS = [MISTRAL_ID, QWEN_ID]


def sampled(max_tokens: int, seed: int) -> dict[str, Any]:
    return {
        "sampling": pb.SamplingParams(temperature=1.0, seed=seed),
        "stopping": pb.StoppingCriteria(max_tokens=max_tokens),
    }


def finished_texts(choices: dict[int, Choice]) -> list[str]:
    """Texts of the choices the grammar ended (a LENGTH finish may stop anywhere)."""
    texts = []
    for choice in choices.values():
        assert choice.finished is not None
        if choice.finished.reason != pb.FINISH_REASON_LENGTH:
            assert choice.finished.reason == pb.FINISH_REASON_STOP
            texts.append(choice.text)
    return texts


def grammar_of(server: InferenceServerThread, model: str) -> GrammarCompiler:
    assert server.server is not None
    return next(m.grammar for m in server.server.registry if m.id == model)


@pytest.mark.parametrize("model", MODELS)
def test_json_schema_outputs_all_validate(stub: pb_grpc.InferenceStub, model: str) -> None:
    constraint = pb.OutputConstraint(json_schema=json.dumps(PERSON))
    ended = []
    for seed in range(3):
        choices = generate(stub, model=model, n=8, constraint=constraint, **sampled(64, seed))
        assert len(choices) == 8
        ended += finished_texts(choices)
    # Random weights mostly wander in whitespace; enough outputs end to make the check real.
    assert len(ended) >= 3
    for text in ended:
        jsonschema.validate(json.loads(text), PERSON)


@pytest.mark.parametrize("model", MODELS)
def test_json_object_outputs_parse_as_one_object(stub: pb_grpc.InferenceStub, model: str) -> None:
    constraint = pb.OutputConstraint(json_object=pb.JsonObject())
    choices = generate(stub, model=model, n=8, constraint=constraint, **sampled(48, 7))
    for choice in choices.values():
        # Every prefix the grammar allowed starts an object, whatever ended it.
        assert choice.text.lstrip().startswith("{")
    for text in finished_texts(choices):
        assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("model", MODELS)
def test_regex_and_grammar_are_followed(stub: pb_grpc.InferenceStub, model: str) -> None:
    regex = r"(yes|no), [0-9]{1,3}"
    # Bounded, so that a random model must end them within max_tokens.
    ebnf = 'root ::= "ok " ("a" | "b") ("a" | "b")? "."'
    for constraint, pattern in (
        (pb.OutputConstraint(regex=regex), regex),
        (pb.OutputConstraint(grammar=ebnf), r"ok [ab]{1,2}\."),
    ):
        choices = generate(stub, model=model, n=4, constraint=constraint, **sampled(16, 3))
        ended = finished_texts(choices)
        assert ended, "short grammars end within 16 tokens"
        for text in ended:
            assert re.fullmatch(pattern, text), text


CONSTRAINT_REFUSALS = [
    ("uniqueItems", {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}),
    ("oneOf", {"oneOf": [{"type": "integer"}, {"type": "number"}]}),
    ("format", {"type": "string", "format": "my-format"}),
]


@pytest.mark.parametrize(("keyword", "schema"), CONSTRAINT_REFUSALS)
def test_an_unenforceable_keyword_is_refused_by_name(
    stub: pb_grpc.InferenceStub, keyword: str, schema: dict[str, Any]
) -> None:
    error = _refused(stub, constraint=pb.OutputConstraint(json_schema=json.dumps(schema)))
    assert str(error.details()).startswith("constraint: ")
    assert repr(keyword) in str(error.details())


@pytest.mark.parametrize(
    ("param", "fields"),
    [
        ("constraint", {"constraint": pb.OutputConstraint(json_schema="{not json")}),
        ("constraint", {"constraint": pb.OutputConstraint(json_schema='{"type": 5}')}),
        ("constraint", {"constraint": pb.OutputConstraint(regex="((")}),
        ("constraint", {"constraint": pb.OutputConstraint(grammar="root ::= missing")}),
        ("constraint", {"constraint": pb.OutputConstraint()}),
        (
            "ignore_eos",
            {
                "constraint": pb.OutputConstraint(json_object=pb.JsonObject()),
                "stopping": pb.StoppingCriteria(ignore_eos=True),
            },
        ),
        (
            "min_tokens",
            {
                "constraint": pb.OutputConstraint(json_object=pb.JsonObject()),
                "stopping": pb.StoppingCriteria(max_tokens=8, min_tokens=2),
            },
        ),
    ],
)
def test_invalid_constraints_name_the_param(
    stub: pb_grpc.InferenceStub, param: str, fields: dict[str, Any]
) -> None:
    error = _refused(stub, **fields)
    assert str(error.details()).startswith(f"{param}: ")
    assert (PARAM_METADATA_KEY, param) in tuple(error.trailing_metadata())


def test_a_repeated_schema_is_compiled_once(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    grammar = grammar_of(inference_server, MISTRAL_ID)
    schema = {"type": "object", "properties": {"cache_probe": {"type": "boolean"}}}
    constraint = pb.OutputConstraint(json_schema=json.dumps(schema))
    misses = grammar.misses
    generate(stub, constraint=constraint, **sampled(4, 0))
    hits = grammar.hits
    generate(stub, constraint=constraint, **sampled(4, 1))
    assert grammar.misses == misses + 1
    assert grammar.hits == hits + 1


def test_a_compile_past_the_time_limit_is_refused_clearly(
    stub: pb_grpc.InferenceStub,
    inference_server: InferenceServerThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grammar = grammar_of(inference_server, MISTRAL_ID)
    release = threading.Event()
    compile_now = grammar._compile_now

    def stuck(spec: Any) -> Any:
        release.wait(10)
        return compile_now(spec)

    monkeypatch.setattr(grammar, "_compile_now", stuck)
    monkeypatch.setattr(grammar, "timeout_s", 0.05)
    try:
        error = _refused(stub, constraint=pb.OutputConstraint(regex="slow(ly)? compiled"))
    finally:
        release.set()
    assert str(error.details()).startswith("constraint: compiling the regex grammar took longer")


@pytest.mark.parametrize("model", MODELS)
def test_cancelling_a_constrained_generation_leaves_nothing_behind(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread, model: str
) -> None:
    constraint = pb.OutputConstraint(json_schema=json.dumps({"type": "array"}))
    tokens_before = idle_tokens(inference_server)
    call = stub.Generate(
        pb.GenerateRequest(
            model=model, messages=HELLO, n=2, constraint=constraint, **sampled(200, 5)
        ),
        timeout=60,
    )
    responses = cast(Iterator[pb.GenerateResponse], call)
    next(responses)
    assert inference_server.active_requests() >= 1
    call.cancel()
    # Both choices left before their 200 tokens (the cancel reached the engine).
    assert idle_tokens(inference_server) - tokens_before < 2 * 200
    # The engine still serves constrained requests after the cancelled one left.
    generate(stub, model=model, constraint=constraint, **sampled(4, 6))


def _refused(stub: pb_grpc.InferenceStub, **fields: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub, **fields)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    return error
