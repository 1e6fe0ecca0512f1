"""GenerateMany over real gRPC on loopback: many generations on one bidirectional stream.

Each generation must yield what Generate yields for the same request, then exactly one
GenerationEnd holding the status Generate would have ended with.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, cast

import grpc
import pytest

from tensorchat.request_error import CODE_METADATA_KEY, PARAM_METADATA_KEY
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.integration.conftest import MISTRAL_ID, QWEN_ID, TINY_CONTEXT, idle_tokens
from tests.integration.test_generate import (
    HELLO,
    INVALID_REQUESTS,
    Choice,
    fold,
    generate,
    greedy,
)
from tests.support.servers import InferenceServerThread

OK = grpc.StatusCode.OK.value[0]
CANCELLED = grpc.StatusCode.CANCELLED.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]

LONG_PROMPT = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="word " * 400)])


def request(request_id: str, **fields: Any) -> pb.GenerateRequest:
    """The request `generate` in test_generate.py would send, with a request id."""
    fields.setdefault("model", MISTRAL_ID)
    if not any(key in fields for key in ("messages", "prompt", "token_ids")):
        fields["messages"] = HELLO
    return pb.GenerateRequest(request_id=request_id, **fields)


def long_running() -> dict[str, Any]:
    """A generation that runs far longer than any test waits on it."""
    return greedy(max_tokens=200)


class ManyCall:
    """One GenerateMany call driven from the test's thread.

    Requests go through a queue, so the test decides what to send after what it has read (a
    cancel after the first token). Every event read is kept in `events`, in arrival order.
    """

    def __init__(self, stub: pb_grpc.InferenceStub, timeout: float = 30.0) -> None:
        self._requests: queue.Queue[pb.GenerateManyRequest | None] = queue.Queue()
        self.call = stub.GenerateMany(self._request_iterator(), timeout=timeout)
        self._responses = iter(self.call)
        self.events: list[pb.GenerationEvent] = []
        self.messages = 0
        self.reads_batches: list[bool] = []  # each response message's flag

    def _request_iterator(self) -> Iterator[pb.GenerateManyRequest]:
        while (message := self._requests.get()) is not None:
            yield message

    def __enter__(self) -> ManyCall:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Never leave grpc's request thread blocked on the queue, nor the call running.
        self.half_close()
        self.call.cancel()

    def start(self, request_id: str, **fields: Any) -> pb.GenerateRequest:
        started = request(request_id, **fields)
        self._requests.put(pb.GenerateManyRequest(start=started))
        return started

    def cancel(self, request_id: str) -> None:
        self._requests.put(pb.GenerateManyRequest(cancel=request_id))

    def send(self, message: pb.GenerateManyRequest) -> None:
        self._requests.put(message)

    def half_close(self) -> None:
        self._requests.put(None)

    def read(self) -> bool:
        """Reads one response message; False once the call has ended (raises if not OK)."""
        response = next(self._responses, None)
        if response is None:
            return False
        assert response.events, "a response message carries no event"
        self.messages += 1
        self.reads_batches.append(response.reads_batches)
        self.events.extend(response.events)
        return True

    def read_until(self, wanted: Callable[[pb.GenerationEvent], bool]) -> pb.GenerationEvent:
        """Reads until an event `wanted` accepts has arrived (maybe already); returns it."""
        seen = 0
        while True:
            for event in self.events[seen:]:
                if wanted(event):
                    return event
            seen = len(self.events)
            assert self.read(), "the call ended before the awaited event"

    def first_response(self, request_id: str) -> pb.GenerationEvent:
        return self.read_until(lambda e: e.request_id == request_id and e.HasField("response"))

    def end_of(self, request_id: str) -> pb.GenerationEnd:
        event = self.read_until(lambda e: e.request_id == request_id and e.HasField("end"))
        return event.end

    def refusal_of(self, request_id: str) -> pb.GenerationEnd:
        event = self.read_until(lambda e: e.request_id == request_id and e.HasField("refused"))
        return event.refused

    def finish(self) -> None:
        """Half-closes, reads every remaining event; the call must end OK."""
        self.half_close()
        while self.read():
            pass
        assert self.call.code() == grpc.StatusCode.OK, self.call.details()

    def of(self, request_id: str) -> list[pb.GenerationEvent]:
        return [event for event in self.events if event.request_id == request_id]

    def ends(self, request_id: str) -> list[pb.GenerationEnd]:
        return [event.end for event in self.of(request_id) if event.HasField("end")]

    def generation(self, request_id: str) -> dict[int, Choice]:
        """The choices of a generation that ended OK: its responses then exactly one end."""
        events = self.of(request_id)
        assert events, f"no event for {request_id!r}"
        assert [event.HasField("end") for event in events].count(True) == 1, events
        assert events[-1].HasField("end"), f"{request_id}: events after its end"
        assert events[-1].end == pb.GenerationEnd(code=OK), events[-1].end
        return fold(event.response for event in events[:-1])


def outcome(choices: dict[int, Choice]) -> dict[int, tuple[str, list[int], pb.Finished]]:
    """What must not depend on the RPC: each choice's text, tokens and Finished.

    Only the prefix cache's share of the prompt may differ: the same prompt ran before.
    """
    result = {}
    for index, choice in choices.items():
        assert choice.finished is not None, f"choice {index} never finished"
        finished = pb.Finished()
        finished.CopyFrom(choice.finished)
        finished.usage.cached_tokens = 0
        result[index] = (choice.text, choice.token_ids, finished)
    return result


def generate_error(stub: pb_grpc.InferenceStub, fields: dict[str, Any]) -> pb.GenerationEnd:
    """How Generate fails for `fields`, as the GenerationEnd that must mirror it."""
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub, **fields)
    error = caught.value
    # grpc's stubs type metadata items as objects; at run time they are (key, value) pairs.
    trailing = dict(cast(tuple[tuple[str, str], ...], error.trailing_metadata()))
    return pb.GenerationEnd(
        code=error.code().value[0],
        message=str(error.details()),
        param=trailing.get(PARAM_METADATA_KEY, ""),
        error_code=trailing.get(CODE_METADATA_KEY, ""),
    )


def running(server: InferenceServerThread) -> int:
    assert server.server is not None
    return server.server.servicer.running_requests


def wait_until_nothing_runs(server: InferenceServerThread) -> None:
    """Until the servicer runs no request and no engine holds one (as `wait_until_idle`).

    A request whose plan is still being built (templating, tokenizing) counts in neither: to
    know that one has ended, read its end."""
    while running(server) or server.active_requests():
        time.sleep(0.01)


def test_half_close_without_generations_ends_ok(stub: pb_grpc.InferenceStub) -> None:
    with ManyCall(stub) as many:
        many.finish()
        assert many.events == []


def test_generations_match_generate_and_end_once(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    greedy_fields = {"model": MISTRAL_ID, **greedy(max_tokens=16)}
    seeded_fields = {
        "model": QWEN_ID,
        "n": 2,
        "sampling": pb.SamplingParams(temperature=1.0, top_p=0.9, seed=99),
        "stopping": pb.StoppingCriteria(max_tokens=12, ignore_eos=True),
    }
    expected = {
        "greedy": outcome(generate(stub, **greedy_fields)),
        "seeded": outcome(generate(stub, **seeded_fields)),
    }
    with ManyCall(stub) as many:
        many.start("greedy", **greedy_fields)
        many.start("seeded", **seeded_fields)
        # Half-closed at once: the server must still finish both and send all their events.
        many.finish()

    assert {event.request_id for event in many.events} == {"greedy", "seeded"}
    for request_id in ("greedy", "seeded"):
        choices = many.generation(request_id)
        assert outcome(choices) == expected[request_id], request_id
        assert all(choice.deltas >= 2 for choice in choices.values()), "tokens must stream"
    assert sorted(expected["seeded"]) == [0, 1]
    assert len(many.generation("greedy")[0].token_ids) == 16
    wait_until_nothing_runs(inference_server)


def test_failures_end_their_generation_only(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    failing: dict[str, dict[str, Any]] = {
        "unknown-model": {"model": "no-such/model"},
        "context-overflow": {"messages": LONG_PROMPT},
        "max-tokens-past-context": {"stopping": pb.StoppingCriteria(max_tokens=TINY_CONTEXT)},
    }
    for index, (_, fields) in enumerate(INVALID_REQUESTS):
        failing[f"invalid-{index}"] = cast(dict[str, Any], fields)
    expected = {request_id: generate_error(stub, fields) for request_id, fields in failing.items()}
    good = greedy(max_tokens=10)
    reference = outcome(generate(stub, **good))

    with ManyCall(stub) as many:
        many.start("good", **good)
        for request_id, fields in failing.items():
            many.start(request_id, **fields)
        many.finish()

    assert outcome(many.generation("good")) == reference
    for request_id, fields in failing.items():
        events = many.of(request_id)
        assert len(events) == 1 and events[0].HasField("end"), (request_id, events)
        assert events[0].end == expected[request_id], (request_id, fields)

    # What those ends say, beyond mirroring Generate.
    assert many.ends("unknown-model")[0].code == NOT_FOUND
    overflow = many.ends("context-overflow")[0]
    assert overflow.code == INVALID_ARGUMENT
    assert overflow.error_code == "context_length_exceeded"
    prompt_tokens = stub.CountTokens(
        pb.TokenizeRequest(model=MISTRAL_ID, messages=LONG_PROMPT)
    ).count
    # OpenAI's wording names the context length (prompt + completion), as test_generate's does.
    assert f"maximum context length is {TINY_CONTEXT} tokens" in overflow.message
    assert f"resulted in {prompt_tokens} tokens" in overflow.message
    for index, (param, _) in enumerate(INVALID_REQUESTS):
        end = many.ends(f"invalid-{index}")[0]
        assert end.code == INVALID_ARGUMENT, param
        assert end.param == param
        assert end.message.startswith(f"{param}: ")
    wait_until_nothing_runs(inference_server)


def test_empty_or_running_request_id_is_rejected(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    fields = greedy(max_tokens=48)
    reference = outcome(generate(stub, **fields))
    with ManyCall(stub) as many:
        many.start("a", **fields)
        many.first_response("a")
        many.start("", **greedy(max_tokens=4))
        many.start("a", model=QWEN_ID, **greedy(max_tokens=4))
        rejected = many.refusal_of("")
        duplicate = many.refusal_of("a")
        many.finish()

    for refusal in (rejected, duplicate):
        assert refusal.code == INVALID_ARGUMENT
        assert refusal.param == "request_id"
        assert refusal.message.startswith("request_id: ")
    assert len(many.of("")) == 1
    # The refusal ends the start just sent, not the running "a": that one runs on to its own
    # single OK end, its last event.
    events = many.of("a")
    assert [e.refused for e in events if e.HasField("refused")] == [duplicate]
    ends = [i for i, event in enumerate(events) if event.HasField("end")]
    assert ends == [len(events) - 1], f"'a' ended {len(ends)} times"
    assert events[-1].end == pb.GenerationEnd(code=OK)
    original = fold(event.response for event in events if event.HasField("response"))
    assert outcome(original) == reference
    wait_until_nothing_runs(inference_server)


def test_cancel_ends_one_generation_with_cancelled(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    tokens_before = idle_tokens(inference_server)
    with ManyCall(stub) as many:
        many.start("long", **long_running())
        many.start("short", **greedy(max_tokens=6))
        many.first_response("long")
        assert running(inference_server) >= 1 and inference_server.active_requests() >= 1
        many.cancel("long")
        end = many.end_of("long")
        assert end.code == CANCELLED
        # Read, not inferred from an idle server: until its plan is built (on the preparation
        # threads) "short" is neither running nor in an engine, and a cancel sent then would
        # end it CANCELLED. Read, its end is in and the cancels below hit an ended generation.
        assert many.end_of("short").code == OK
        wait_until_nothing_runs(inference_server)
        # The engine dropped "long" before its 200 tokens ("short" has 6).
        assert idle_tokens(inference_server) - tokens_before < 200 + 6

        # The stream lives on: a new generation runs; cancelling what already ended (or never
        # started) must not end anything a second time.
        many.start("after", **greedy(max_tokens=5))
        many.cancel("long")
        many.cancel("short")
        many.cancel("never-started")
        many.finish()

    long_events = many.of("long")
    assert long_events[-1].end == end
    assert many.ends("long") == [end]
    long_choices = fold(event.response for event in long_events[:-1])
    assert long_choices[0].token_ids, "the first token came before the cancel"
    assert long_choices[0].finished is None, "a cancelled generation has no Finished"
    assert len(long_choices[0].token_ids) < 200
    assert len(many.generation("short")[0].token_ids) == 6
    assert len(many.generation("after")[0].token_ids) == 5
    assert "never-started" not in {event.request_id for event in many.events}
    assert running(inference_server) == 0


def test_cancelled_call_stops_every_generation(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    tokens_before = idle_tokens(inference_server)
    with ManyCall(stub) as many:
        many.start("one", **long_running())
        many.start("two", model=QWEN_ID, **long_running())
        many.first_response("one")
        many.first_response("two")
        assert running(inference_server) == 2
        assert inference_server.active_requests() == 2
        many.call.cancel()
        with pytest.raises(grpc.RpcError) as caught:
            while many.read():
                pass
        assert caught.value.code() == grpc.StatusCode.CANCELLED
        wait_until_nothing_runs(inference_server)
    # Both left the engine before their 200 tokens, as a cancelled Generate does.
    assert idle_tokens(inference_server) - tokens_before < 2 * 200


def test_a_batch_starts_then_cancels_and_the_service_says_it_reads_batches(
    stub: pb_grpc.InferenceStub, inference_server: InferenceServerThread
) -> None:
    # One message: two starts, then a cancel of the second (the proto's order: a message's
    # starts before its cancels), as the facade writes what queued during its previous write.
    fields = {"model": MISTRAL_ID, **greedy(max_tokens=8)}
    expected = outcome(generate(stub, **fields))
    with ManyCall(stub) as many:
        batch = [request("kept", **fields), request("dropped", **long_running())]
        many.send(pb.GenerateManyRequest(starts=batch, cancels=["dropped"]))
        many.send(pb.GenerateManyRequest(start=request("single", **fields), cancels=["single"]))
        many.finish()

    assert outcome(many.generation("kept")) == expected
    # Cancelled in the same turn as its start, before it produced anything: its one event.
    for request_id in ("dropped", "single"):
        assert [e.WhichOneof("kind") for e in many.of(request_id)] == ["end"], request_id
        assert many.ends(request_id)[0].code == CANCELLED
    assert many.reads_batches[0] and not any(many.reads_batches[1:])
    wait_until_nothing_runs(inference_server)
