"""An engine that hangs while its service answers (inference.engine_watch), over real gRPC.

The synthetic engine is made to hang by stopping its steps: its ticker runs, requests stay in
it, and no token comes, which is what a wedged GPU or a dead executor thread looks like from
the service. The watch's round is a quarter of a second here (a quarter of the stall time), and
the engine runs one request at a time, so that others wait in its queue."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from facade.settings import FacadeSettings
from inference.config import ModelsConfig
from inference.engines.synthetic import SyntheticEngine
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.integration.conftest import synthetic_models_config
from tests.support.servers import FacadeServerThread, InferenceServerThread
from tests.support.waiting import eventually

MODEL = "hang-model"
STALL_S = 1.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


API_KEY = "tc-hung-engine-test-key"


def one_at_a_time(checkpoint: Path) -> ModelsConfig:
    config = synthetic_models_config(MODEL, checkpoint)
    config.models[0].options["max_batch_size"] = 1
    return config


@pytest.fixture()
def service(tiny_qwen2_dir: Path) -> Iterator[InferenceServerThread]:
    config = one_at_a_time(tiny_qwen2_dir)
    server = InferenceServerThread(config, engine_stall_s=STALL_S, metrics_port=0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def channel(service: InferenceServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(service.address) as channel:
        yield channel


def request(max_tokens: int) -> pb.GenerateRequest:
    messages = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="hi")])
    stopping = pb.StoppingCriteria(max_tokens=max_tokens, ignore_eos=True)
    return pb.GenerateRequest(model=MODEL, messages=messages, stopping=stopping)


def health(channel: grpc.Channel) -> list[int]:
    stub = health_pb2_grpc.HealthStub(channel)
    return [
        stub.Check(health_pb2.HealthCheckRequest(service=name)).status
        for name in ("", "tensorchat.v1.Inference")
    ]


def listed(channel: grpc.Channel) -> list[str]:
    stub = pb_grpc.InferenceStub(channel)
    return [m.id for m in stub.ListModels(pb.ListModelsRequest()).models]


def stalled_gauge(service: InferenceServerThread) -> float:
    assert service.server is not None
    url = f"http://127.0.0.1:{service.server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "tensorchat_inference_engine_stalled":
            return next(s.value for s in family.samples if s.labels["model_name"] == MODEL)
    raise AssertionError("no engine_stalled gauge")


class Reader:
    """A Generate call read to its end on a thread of its own."""

    def __init__(self, channel: grpc.Channel, max_tokens: int) -> None:
        self.call = pb_grpc.InferenceStub(channel).Generate(request(max_tokens), timeout=30)
        self.tokens = 0
        self.error: grpc.StatusCode | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.tokens += len(response.delta.token_ids)
        except grpc.RpcError as error:
            self.error = error.code()

    def join(self) -> None:
        self._thread.join(30)
        assert not self._thread.is_alive()


def test_a_hung_engine_is_reported_probed_when_it_holds_nothing_and_cleared_when_it_generates(
    service: InferenceServerThread, channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = service.engines[MODEL]
    assert isinstance(engine, SyntheticEngine)
    assert health(channel) == [SERVING, SERVING]
    assert stalled_gauge(service) == 0

    monkeypatch.setattr(engine, "_step", lambda now: None)  # the engine hangs
    stuck = Reader(channel, max_tokens=4)
    eventually(lambda: health(channel) == [NOT_SERVING, NOT_SERVING], "NOT_SERVING")
    assert stalled_gauge(service) == 1
    assert listed(channel) == [MODEL]  # still served: a refusal would down a whole DNS target
    assert stuck.tokens == 0 and stuck.error is None  # not cut off: it may still come

    stuck.call.cancel()  # as the facade's progress timeout does
    stuck.join()
    # Holding nothing, it gets the server's own one-token probe, which it holds too.
    eventually(lambda: engine.requests_held == 1, "the server's probe in the engine")
    assert health(channel) == [NOT_SERVING, NOT_SERVING]
    monkeypatch.undo()  # the engine generates again (or was only slow): the probe shows it
    eventually(lambda: health(channel) == [SERVING, SERVING], "SERVING again")
    assert stalled_gauge(service) == 0
    assert engine.requests_held == 0
    after = Reader(channel, max_tokens=4)
    after.join()
    assert after.error is None and after.tokens == 4


def test_a_finished_request_whose_client_stops_reading_does_not_stall_the_engine(
    service: InferenceServerThread, channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine is done with it (it holds nothing); only the client is slow."""
    caplog.set_level(logging.INFO, logger="inference.engine_watch")
    engine = service.engines[MODEL]
    stubborn = pb_grpc.InferenceStub(channel).Generate(request(max_tokens=200), timeout=30)
    next(iter(stubborn))  # read once, then never again
    eventually(lambda: engine.requests_held == 0, "the engine done with it")
    time.sleep(2 * STALL_S)  # rounds of the watch go by (what they find is asserted below)
    assert health(channel) == [SERVING, SERVING]
    assert stalled_gauge(service) == 0
    assert [r.getMessage() for r in caplog.records if r.name == "inference.engine_watch"] == []
    stubborn.cancel()


def test_requests_queued_past_the_stall_time_behind_working_ones_do_not_stall_it(
    service: InferenceServerThread, channel: grpc.Channel
) -> None:
    """Eight requests of 0.2 s each on a batch of one: the last waits 1.4 s in the engine's
    queue, longer than the stall time, while the engine generates for the others."""
    readers = [Reader(channel, max_tokens=200) for _ in range(8)]
    for reader in readers:
        reader.join()
        assert reader.error is None and reader.tokens == 200
    assert health(channel) == [SERVING, SERVING]
    assert stalled_gauge(service) == 0


class Stack:
    """Two replicas behind a facade, one of whose engines hangs; clients on 4 threads."""

    def __init__(self, checkpoint: Path, backends: Callable[[str, str], list[str]]) -> None:
        config = one_at_a_time(checkpoint)
        self.hung, self.working = (
            InferenceServerThread(config, engine_stall_s=STALL_S).start() for _ in range(2)
        )
        settings = FacadeSettings(
            backends=backends(self.hung.address, self.working.address),
            keys_file=None,
            api_keys=[API_KEY],
            refresh_interval_s=0.2,
            progress_timeout_s=2.0,
            stream_max_age_s=1.0,  # streams rotate: new ones are placed by gRPC's balancer
        )
        self.facade = FacadeServerThread(settings).start()
        self.pool = self.facade.app.state.facade.pool
        headers = {"authorization": f"Bearer {API_KEY}"}
        self.client = httpx.Client(base_url=self.facade.url, headers=headers, timeout=30)
        self.clients = ThreadPoolExecutor(4)
        self.hung_engine = self.hung.engines[MODEL]

    def ask(self, _: int = 0) -> int:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        return self.client.post("/v1/chat/completions", json=body).status_code

    def hang_one(self, monkeypatch: pytest.MonkeyPatch) -> None:
        eventually(lambda: self.ask() == 200, "the model routed")
        monkeypatch.setattr(self.hung_engine, "_step", lambda now: None)
        with grpc.insecure_channel(self.hung.address) as channel:

            def found() -> bool:  # requests reach the hung replica until it is found
                list(self.clients.map(self.ask, range(4)))
                return health(channel) == [NOT_SERVING, NOT_SERVING]

            eventually(found, "the hung replica found stalled")

    def served_without_the_hung_one(self) -> tuple[set[int], list[int]]:
        """40 requests: their statuses, and what the hung engine held after each."""
        held: list[int] = []

        def ask_and_look(i: int) -> int:
            status = self.ask(i)
            held.append(self.hung_engine.requests_held)
            return status

        return set(self.clients.map(ask_and_look, range(40))), held

    def close(self) -> None:
        self.clients.shutdown()
        self.client.close()
        self.facade.stop()
        self.hung.stop()
        self.working.stop()


def test_behind_the_facade_a_hung_replica_gets_no_more_requests_and_every_client_is_served(
    tiny_qwen2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas, each its own target; one hangs. Before the watch, the facade put it back
    in routing at every good ListModels probe, and each request sent there waited out the
    progress timeout. Now its channel sees NOT_SERVING and its probe fails: once the
    requests it held are gone, it holds only the server's own probe request, and every
    client gets its answer from the other replica."""
    stack = Stack(tiny_qwen2_dir, lambda hung, working: [hung, working])
    try:
        stack.hang_one(monkeypatch)
        eventually(
            lambda: [b.target for b in stack.pool.candidates(MODEL)] == [stack.working.address],
            "the hung replica out of the facade's routing",
        )
        eventually(lambda: stack.hung_engine.requests_held <= 1, "its requests gone")
        statuses, held = stack.served_without_the_hung_one()
        assert statuses == {200}
        assert max(held) <= 1, held  # the server's own probe, no client's request
    finally:
        stack.close()


def test_behind_one_dns_like_target_the_hung_pod_gets_no_new_streams(
    tiny_qwen2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both replicas behind one target of two addresses, as a headless Service is to gRPC.
    The facade cannot leave the target out (the other pod serves it); its channel's health
    checking keeps new streams off the hung pod, and the streams on it are rotated away."""
    stack = Stack(tiny_qwen2_dir, lambda hung, working: [f"ipv4:{hung},{working}"])
    try:
        stack.hang_one(monkeypatch)

        def moved_off() -> bool:  # the streams opened before it was found rotate away
            list(stack.clients.map(stack.ask, range(4)))
            return stack.hung_engine.requests_held <= 1

        eventually(moved_off, "the hung pod's streams rotated away")
        statuses, held = stack.served_without_the_hung_one()
        assert statuses == {200}
        assert max(held) <= 1, held
    finally:
        stack.close()
