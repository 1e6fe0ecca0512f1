"""Several inference replicas behind one facade: spreading, a replica leaving and coming back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import grpc
import httpx
import pytest

from facade.settings import FacadeSettings
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.integration.conftest import MISTRAL_ID, wait_until_idle
from tests.integration.facade.conftest import TORCH_ONLY, FacadeServerThread, Keys, Replica
from tests.integration.test_generate_many import ManyCall, long_running
from tests.support.servers import InferenceServerThread
from tests.support.waiting import eventually

pytestmark = TORCH_ONLY

LONG_STREAM = {
    "model": MISTRAL_ID,
    "messages": [{"role": "user", "content": "Tell me a long story."}],
    "ignore_eos": True,
    "stream": True,
}


def open_streams(stack: ExitStack, url: str, key: str, count: int) -> list[Iterator[str]]:
    """Starts `count` long streams and reads each one's first event (so it is running).

    The line iterators are returned to be kept: dropping one closes its connection.
    """
    readers = []
    for _ in range(count):
        response = stack.enter_context(
            httpx.stream(
                "POST",
                f"{url}/v1/chat/completions",
                json=LONG_STREAM,
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
        )
        assert response.status_code == 200
        reader = response.iter_lines()
        assert next(reader).startswith("data: ")
        readers.append(reader)
    return readers


def quick(url: str, key: str) -> httpx.Response:
    body: dict[str, Any] = {**LONG_STREAM, "stream": False, "max_tokens": 1}
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


@pytest.fixture()
def replicas(inference_server: InferenceServerThread) -> Iterator[list[Replica]]:
    started = [Replica(inference_server).start(), Replica(inference_server).start()]
    yield started
    for replica in started:
        replica.stop()
    wait_until_idle(inference_server)


def test_least_outstanding_spreads_streams_and_survives_a_replica_leaving(
    replicas: list[Replica], facade_keys: Keys
) -> None:
    a, b = replicas
    settings = FacadeSettings(
        backends=[a.address, b.address],
        keys_file=facade_keys.path,
        refresh_interval_s=0.2,
        probe_timeout_s=0.5,
    )
    with FacadeServerThread(settings) as server:
        with ExitStack() as stack:
            readers = open_streams(stack, server.url, facade_keys.full, 4)
            assert (a.running, b.running) == (2, 2), len(readers)

        # A leaves. Requests keep working: one routed to it fails UNAVAILABLE before any
        # output and is retried on B, and A leaves the routing table.
        a.stop()
        for _ in range(4):
            assert quick(server.url, facade_keys.full).status_code == 200
        eventually(lambda: httpx.get(f"{server.url}/health").json()["backends_healthy"] == 1)

        # A comes back on the same address, without restarting the facade.
        returned = Replica(b._inference, port=a.port).start()
        replicas.append(returned)
        eventually(lambda: httpx.get(f"{server.url}/health").json()["backends_healthy"] == 2)
        with ExitStack() as stack:
            readers = open_streams(stack, server.url, facade_keys.full, 2)
            assert (returned.running, b.running) == (1, 1), len(readers)


def test_grpc_round_robin_spreads_over_a_multi_address_target(
    replicas: list[Replica], facade_keys: Keys
) -> None:
    # One target naming several addresses, as a DNS name of a headless service resolves:
    # gRPC's round_robin (not the facade) picks the address for each GenerateMany stream,
    # and concurrent requests take streams of their own (up to MAX_STREAMS_PER_BACKEND).
    a, b = replicas
    target = f"ipv4:{a.address},{b.address}"
    settings = FacadeSettings(backends=[target], keys_file=facade_keys.path)
    with FacadeServerThread(settings) as server:
        for _ in range(4):  # both subchannels connected
            assert quick(server.url, facade_keys.full).status_code == 200
        with ExitStack() as stack:
            readers = open_streams(stack, server.url, facade_keys.full, 2)
            assert (a.running, b.running) == (1, 1), len(readers)


def two_replicas(a: Replica, b: Replica, keys: Keys) -> FacadeSettings:
    """A facade over A and B that probes rarely: routing follows from the requests alone."""
    return FacadeSettings(
        backends=[a.address, b.address], keys_file=keys.path, refresh_interval_s=60
    )


def test_a_draining_replica_sends_new_requests_elsewhere(
    replicas: list[Replica], facade_keys: Keys
) -> None:
    a, b = replicas
    settings = two_replicas(a, b, facade_keys)
    with FacadeServerThread(settings) as server:
        with ExitStack() as stack:
            open_streams(stack, server.url, facade_keys.full, 2)  # a stream open to each
        # A drains (SIGTERM). A GenerateMany call opened before still takes messages while a
        # generation runs on it, so the servicer refuses new generations with UNAVAILABLE,
        # then ends the call (OK) once the running one has ended ...
        assert a.servicer is not None
        with (
            grpc.insecure_channel(a.address) as channel,
            ManyCall(pb_grpc.InferenceStub(channel)) as many,
        ):
            many.start("running", **long_running())
            many.first_response("running")
            a.servicer.drain()
            many.start("late")
            assert many.end_of("late").code == grpc.StatusCode.UNAVAILABLE.value[0]
            assert many.end_of("running").code == 0
            assert not many.read()  # the call ended without a half-close
            assert many.call.code() == grpc.StatusCode.OK
        # ... and the facade retries them on B: every request still succeeds.
        for _ in range(4):
            assert quick(server.url, facade_keys.full).status_code == 200


def test_a_text_completion_of_several_prompts_is_retried_whole_on_another_replica(
    replicas: list[Replica], facade_keys: Keys
) -> None:
    # Both prompts' generations run on one replica per attempt; a replica that refuses them
    # (UNAVAILABLE: it drains) before anything reached the client sends them all to another,
    # as for chat (facade/generation_run.py).
    a, b = replicas
    settings = two_replicas(a, b, facade_keys)
    with FacadeServerThread(settings) as server:
        pool = server.app.state.facade.pool
        assert pool.candidates(MISTRAL_ID)[0].target == a.address  # tried first
        assert a.servicer is not None
        a.servicer.drain()
        body: dict[str, Any] = {
            "model": MISTRAL_ID,
            "prompt": ["Once upon a time", "The quick brown fox"],
            "n": 2,
            "max_tokens": 2,
            "temperature": 0,
            "ignore_eos": True,
        }
        headers = {"Authorization": f"Bearer {facade_keys.full}"}
        url = f"{server.url}/v1/completions"
        whole = httpx.post(url, json=body, headers=headers, timeout=30)
        assert whole.status_code == 200
        assert [c["index"] for c in whole.json()["choices"]] == [0, 1, 2, 3]
        assert whole.json()["usage"]["completion_tokens"] == 8
        retries = server.app.state.facade.metrics.retries.labels(MISTRAL_ID)
        assert retries._value.get() == 1
        assert [r.target for r in pool.candidates(MISTRAL_ID)] == [b.address]  # A is down
        streamed = httpx.post(url, json={**body, "stream": True}, headers=headers, timeout=30)
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
