"""Replicas that freeze, die or drain under load, and a facade that shuts down mid-stream.

The replicas are real `tensorchat inference` processes on the synthetic engine
(benchmarks/stackbench/replicas.py), so that signals reach them; the facade runs in this
process so that its slots, leases and metrics can be read. Timeouts are small through the
settings; the tests assert how requests end, never how long that took.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from benchmarks.stackbench.plan import MODEL
from benchmarks.stackbench.replicas import Replica, replicas
from facade.settings import FacadeSettings
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.support.servers import FacadeServerThread

pytestmark = pytest.mark.slow

RATE = 20.0  # tokens/s per stream: a 100-token request runs for 5 s
SETTINGS: dict[str, Any] = {
    "auth_disabled": True,
    "keys_file": None,
    "refresh_interval_s": 1.0,
    "backend_keepalive_s": 1.0,
    "backend_keepalive_timeout_s": 1.0,
    "progress_timeout_s": 3.0,
}


@dataclass
class Outcome:
    """How one request ended, as its client saw it."""

    status: int = 0
    first_content: threading.Event = field(default_factory=threading.Event)
    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False  # the stream ended with [DONE]
    body: dict[str, Any] | None = None

    @property
    def error(self) -> dict[str, Any] | None:
        return next((e["error"] for e in self.events if "error" in e), None)

    @property
    def finished(self) -> bool:
        return any(c.get("finish_reason") for e in self.events for c in e.get("choices", []))


def chat(url: str, outcome: Outcome, *, stream: bool, max_tokens: int) -> None:
    """One chat request, recorded in `outcome` as it goes."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", f"{url}/v1/chat/completions", json=body) as response,
    ):
        outcome.status = response.status_code
        if not stream:
            outcome.body = json.loads(response.read())
            return
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                outcome.done = True
                continue
            event = json.loads(line[6:])
            outcome.events.append(event)
            if any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                outcome.first_content.set()


def run_all(
    url: str, outcomes: list[tuple[Outcome, bool]], max_tokens: int
) -> list[threading.Thread]:
    threads = [
        threading.Thread(
            target=chat,
            args=(
                url,
                o,
            ),
            kwargs={"stream": s, "max_tokens": max_tokens},
        )
        for o, s in outcomes
    ]
    for thread in threads:
        thread.start()
    return threads


def join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(90)
    assert not any(t.is_alive() for t in threads), "a request never ended"


def stats(replica: Replica) -> pb.GetStatsResponse:
    with grpc.insecure_channel(replica.address) as channel:
        return pb_grpc.InferenceStub(channel).GetStats(pb.GetStatsRequest(), timeout=5)


def active(replica: Replica) -> int:
    return sum(m.active_requests for m in stats(replica).models)


def queued(replica: Replica) -> int:
    return sum(m.queued_requests for m in stats(replica).models)


def wait_for(check: Any, what: str) -> None:
    event = threading.Event()
    for _ in range(600):
        if check():
            return
        event.wait(0.05)
    raise AssertionError(f"never: {what}")


def statuses(facade: FacadeServerThread) -> dict[str, float]:
    """Chat requests counted by status in the facade's metrics."""
    metrics = facade.app.state.facade.metrics
    counted: dict[str, float] = {}
    for family in metrics.registry.collect():
        if family.name != "tensorchat_facade_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and "chat" in sample.labels["route"]:
                counted[sample.labels["status"]] = sample.value
    return counted


def assert_released(facade: FacadeServerThread, requests: int) -> None:
    """Once all `requests` are counted, none holds a slot. The count comes last, in the
    outermost middleware after the request's own cleanup (facade/request_context.py), so it
    is what to wait for: the slot is freed just before it, and a test thread that saw the
    slot free could read the metrics before the request was counted."""
    state = facade.app.state.facade
    wait_for(lambda: sum(statuses(facade).values()) >= requests, "every request counted")
    assert state.gate.active == 0
    assert state.metrics.in_flight._value.get() == 0


@pytest.fixture()
def two_replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    with replicas(tmp_path, 2, rate=RATE, shutdown_grace_s=1.0) as started:
        yield started


@pytest.fixture()
def facade(two_replicas: list[Replica]) -> Iterator[FacadeServerThread]:
    settings = FacadeSettings(backends=[r.address for r in two_replicas], **SETTINGS)
    server = FacadeServerThread(settings).start()
    wait_for(lambda: len(server.app.state.facade.pool.candidates(MODEL)) == 2, "both replicas up")
    yield server
    server.stop()


def test_streams_on_a_frozen_replica_end_with_an_error_event_and_release_their_slots(
    two_replicas: list[Replica], facade: FacadeServerThread
) -> None:
    frozen = two_replicas[0]
    streams = [Outcome() for _ in range(6)]
    threads = run_all(facade.url, [(o, True) for o in streams], max_tokens=400)
    for outcome in streams:
        assert outcome.first_content.wait(60)
    on_frozen = active(frozen)
    assert on_frozen > 0
    frozen.freeze()
    join(threads)
    cut = [o for o in streams if o.error is not None]
    assert len(cut) == on_frozen  # only the frozen replica's streams, each with an error
    assert all(o.done for o in cut)  # and [DONE] after it
    assert_released(facade, len(streams))
    assert statuses(facade).get("503") == len(cut)  # counted as failed, not as 200


@pytest.mark.parametrize("how", ["kill", "drain"])
def test_a_replica_lost_under_load_fails_no_request_that_had_delivered_nothing(
    two_replicas: list[Replica], facade: FacadeServerThread, how: str
) -> None:
    lost = two_replicas[0]
    completions = [Outcome() for _ in range(10)]
    streams = [Outcome() for _ in range(6)]
    outcomes = [(o, False) for o in completions] + [(o, True) for o in streams]
    threads = run_all(facade.url, outcomes, max_tokens=100)
    for outcome in streams:
        assert outcome.first_content.wait(60)
    wait_for(lambda: active(lost) >= 2, "requests running on the replica")
    if how == "kill":
        lost.kill()
    else:
        lost.drain()  # its requests outlast the 1 s grace
    join(threads)
    # Nothing had reached the non-streaming clients: all were run again elsewhere.
    assert [o.status for o in completions] == [200] * len(completions)
    assert all(o.body and o.body["choices"][0]["finish_reason"] == "length" for o in completions)
    # Streams that had delivered tokens end with an error event and [DONE], the rest finish.
    assert all(o.done and (o.error is not None) != o.finished for o in streams)
    cut = [o for o in streams if o.error is not None]
    assert cut, "no stream ran on the lost replica"
    assert_released(facade, len(outcomes))
    assert statuses(facade) == {"200": len(completions) + len(streams) - len(cut), "503": len(cut)}


def test_streams_cut_at_the_facade_shutdown_grace_end_with_an_error_event(
    two_replicas: list[Replica],
) -> None:
    settings = FacadeSettings(
        backends=[r.address for r in two_replicas], **SETTINGS, shutdown_grace_s=1
    )
    server = FacadeServerThread(settings).start()
    wait_for(lambda: server.app.state.facade.pool.ready, "a replica up")
    streams = [Outcome() for _ in range(3)]
    threads = run_all(server.url, [(o, True) for o in streams], max_tokens=400)
    for outcome in streams:
        assert outcome.first_content.wait(60)
    server.stop()
    join(threads)
    for outcome in streams:
        assert outcome.error is not None and "shutting down" in outcome.error["message"]
        assert outcome.done
    assert statuses(server) == {"503": len(streams)}


def test_a_request_waiting_its_turn_past_the_progress_timeout_is_served_not_failed(
    tmp_path: Path,
) -> None:
    # One replica whose engine runs one choice at a time: a request behind a 5 s stream waits
    # longer than the facade's 3 s progress timeout. The service's `waiting` events say it is
    # queued, not hung, so it is neither failed nor is the replica taken out of routing (before
    # them: a 503 after 3 s, and the replica marked down).
    with replicas(tmp_path, 1, rate=RATE, max_batch_size=1, waiting_interval_s=0.3) as (replica,):
        settings = FacadeSettings(backends=[replica.address], **SETTINGS)
        with FacadeServerThread(settings) as facade:
            wait_for(lambda: facade.app.state.facade.pool.candidates(MODEL), "the replica up")
            running, waiting = Outcome(), Outcome()
            threads = run_all(facade.url, [(running, True)], max_tokens=100)  # 5 s
            assert running.first_content.wait(60)
            threads += run_all(facade.url, [(waiting, False)], max_tokens=5)
            wait_for(lambda: queued(replica) == 1, "the second request waiting for batch room")
            join(threads)
            assert running.done and running.finished and running.error is None
            assert waiting.status == 200 and waiting.body is not None
            assert waiting.body["choices"][0]["finish_reason"] == "length"
            assert waiting.body["usage"]["completion_tokens"] == 5
            assert_released(facade, 2)
            assert statuses(facade) == {"200": 2}
