"""Routing table logic: names and aliases, 404 vs 503, least-outstanding choice of replica.

The backends here are records with no channel behind them (nothing is called); the same
pool against real inference servers is covered in tests/integration/facade.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest

from facade.backends import Backend, BackendPool, fingerprint, streams_for
from facade.errors import APIError
from tensorchat.v1 import inference_pb2 as pb

MISTRAL = pb.ModelInfo(
    id="mistralai/Mistral-7B-Instruct-v0.3", aliases=["mistral"], engine="torch", created=1
)
QWEN = pb.ModelInfo(
    id="Qwen/Qwen2.5-Coder-7B-Instruct", aliases=["qwen"], engine="torch", created=2
)


def backend(target: str, *models: pb.ModelInfo) -> Backend:
    return Backend(
        target=target,
        channel=cast(Any, None),
        stub=cast(Any, None),
        generations=cast(Any, None),
        models={m.id: m for m in models},
        healthy=True,
    )


def pool_of(*backends: Backend, progress_timeout_s: float = 0.0) -> BackendPool:
    pool = BackendPool([b.target for b in backends], progress_timeout_s=progress_timeout_s)
    pool.backends = list(backends)
    pool._rebuild()
    return pool


def test_ids_and_aliases_resolve_in_any_case() -> None:
    pool = pool_of(backend("a", MISTRAL, QWEN))
    for name in ("qwen/Qwen2.5-Coder-7B-Instruct", "Qwen/Qwen2.5-Coder-7B-Instruct", "QWEN"):
        assert pool.resolve(name).id == QWEN.id
    assert pool.resolve("Mistral").id == MISTRAL.id
    assert pool.ready
    assert [e.id for e in pool.models()] == sorted([MISTRAL.id, QWEN.id])


def test_unknown_model_is_404_and_no_backend_is_503() -> None:
    pool = pool_of(backend("a", MISTRAL))
    with pytest.raises(APIError) as info:
        pool.resolve("gpt-4")
    assert (info.value.status, info.value.code) == (404, "model_not_found")
    empty = pool_of()
    with pytest.raises(APIError) as info:
        empty.resolve("gpt-4")
    assert info.value.status == 503 and info.value.headers["Retry-After"] == "1"
    assert not empty.ready


def test_a_known_model_whose_replicas_are_down_is_503_not_404() -> None:
    a, b = backend("a", MISTRAL), backend("b", QWEN)
    pool = pool_of(a, b)
    pool.mark_down(b, "connection refused")
    assert not b.healthy and b.last_error == "connection refused"
    with pytest.raises(APIError) as info:
        pool.resolve("qwen")
    assert info.value.status == 503
    assert pool.resolve("mistral").id == MISTRAL.id


def test_least_outstanding_replica_is_chosen_and_ties_rotate() -> None:
    a, b, c = backend("a", MISTRAL), backend("b", MISTRAL), backend("c", QWEN)
    pool = pool_of(a, b, c)
    assert {x.target for x in pool.candidates(MISTRAL.id)} == {"a", "b"}
    picked = []
    with pool.use(pool.candidates(MISTRAL.id)[0]) as first:
        picked.append(first.target)
        # `first` is busy: the other replica comes first now.
        with pool.use(pool.candidates(MISTRAL.id)[0]) as second:
            picked.append(second.target)
            assert first.outstanding == 1 and second.outstanding == 1
    assert sorted(picked) == ["a", "b"]
    assert a.outstanding == b.outstanding == 0
    # With equal load, the one picked less often goes first: requests alternate.
    order = []
    for _ in range(4):
        with pool.use(pool.candidates(MISTRAL.id)[0]) as chosen:
            order.append(chosen.target)
    assert order.count("a") == order.count("b") == 2


def test_outstanding_is_released_when_the_request_fails() -> None:
    a = backend("a", MISTRAL)
    pool = pool_of(a)
    with pytest.raises(RuntimeError), pool.use(a):
        raise RuntimeError("rpc failed")
    assert a.outstanding == 0


def test_fingerprint_changes_with_the_serving_configuration() -> None:
    assert fingerprint(MISTRAL).startswith("fp_")
    reloaded = pb.ModelInfo(id=MISTRAL.id, engine="torch", created=99)
    assert fingerprint(reloaded) != fingerprint(MISTRAL)
    assert fingerprint(MISTRAL) == fingerprint(
        pb.ModelInfo(id=MISTRAL.id, engine="torch", created=1)
    )


async def test_a_target_that_never_came_up_is_logged_with_the_reason_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket

    with socket.socket() as sock:  # a port with nothing listening on it
        sock.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{sock.getsockname()[1]}"
    pool = BackendPool([target], probe_timeout_s=1.0)
    with caplog.at_level("WARNING", logger="facade.backends"):
        await pool.start()
        await pool.refresh()
        await pool.close()
    lines = [r.getMessage() for r in caplog.records if target in r.getMessage()]
    assert len(lines) == 1  # logged, and not again while the reason stays the same
    assert "is down: UNAVAILABLE" in lines[0]


@pytest.mark.parametrize(
    ("target", "streams"),
    [
        ("127.0.0.1:50051", 1),
        ("[::1]:50051", 1),
        ("localhost:50051", 1),
        ("unix:/run/tensorchat.sock", 1),
        ("ipv4:10.0.0.5:50051", 1),
        ("ipv4:10.0.0.5:50051,10.0.0.6:50051", 4),
        ("inference.ns.svc:50051", 4),  # DNS may give several addresses
        ("dns:///inference.ns.svc.cluster.local:50051", 4),
    ],
)
def test_a_target_naming_one_server_gets_one_stream(target: str, streams: int) -> None:
    assert streams_for(target) == streams


class ProbeStub:
    """A backend's stub whose ListModels fails with `code`, or answers with `models`."""

    def __init__(self, code: grpc.StatusCode | None, *models: pb.ModelInfo) -> None:
        self.code = code
        self.models = models

    # The stub's signature: the deadline is gRPC's, not an asyncio timeout.
    async def ListModels(self, request: pb.ListModelsRequest, timeout: float) -> Any:  # noqa: ASYNC109
        if self.code is not None:
            metadata = grpc.aio.Metadata()
            raise grpc.aio.AioRpcError(self.code, metadata, metadata, "probe failed", None)
        return pb.ListModelsResponse(models=self.models)


@dataclass
class Streams:
    """What the pool reads of a backend's GenerateMany streams."""

    running: int = 0
    last_message: float = -math.inf  # loop time

    def quiet_for(self, now: float) -> float:
        return now - self.last_message


PROGRESS_TIMEOUT_S = 30.0


def probed(
    code: grpc.StatusCode | None, *, healthy: bool, streams: Streams | None = None
) -> tuple[BackendPool, Backend]:
    replica = backend("a", MISTRAL)
    replica.healthy = healthy
    replica.stub = cast(Any, ProbeStub(code, MISTRAL))
    replica.generations = cast(Any, streams or Streams())
    return pool_of(replica, progress_timeout_s=PROGRESS_TIMEOUT_S), replica


def sending(seconds_ago: float) -> Streams:
    """Streams with generations running, the latest message `seconds_ago` (loop time)."""
    return Streams(running=3, last_message=asyncio.get_running_loop().time() - seconds_ago)


async def test_a_routed_backend_slow_to_answer_its_probe_stays_routed_as_busy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool, replica = probed(grpc.StatusCode.DEADLINE_EXCEEDED, healthy=True, streams=sending(1))
    with caplog.at_level("INFO", logger="facade.backends"):
        await pool.refresh()
        await pool.refresh()
        assert replica.healthy and pool.candidates(MISTRAL.id) == [replica]
        replica.stub = cast(Any, ProbeStub(None, MISTRAL))
        await pool.refresh()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # once while it stays slow, and once when it answers again
    assert "slow to answer its probe (DEADLINE_EXCEEDED" in lines[0]
    assert "answers its probe in time again" in lines[1]


async def test_a_backend_slow_to_answer_and_silent_on_its_streams_is_hung_and_leaves() -> None:
    streams = sending(PROGRESS_TIMEOUT_S + 1)  # requests running, nothing from them since
    pool, replica = probed(grpc.StatusCode.DEADLINE_EXCEEDED, healthy=True, streams=streams)
    await pool.refresh()
    assert not replica.healthy and pool.candidates(MISTRAL.id) == []


async def test_a_stall_takes_a_backend_out_only_when_its_streams_are_silent_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool, replica = probed(None, healthy=True, streams=sending(1))
    with caplog.at_level("WARNING", logger="facade.backends"):
        pool.stalled(replica, "sent nothing for 30 s")
        pool.stalled(replica, "sent nothing for 30 s")
    assert replica.healthy and pool.candidates(MISTRAL.id) == [replica]
    assert ["kept in routing as busy" in r.getMessage() for r in caplog.records] == [True]
    replica.generations = cast(Any, sending(PROGRESS_TIMEOUT_S + 1))
    pool.stalled(replica, "sent nothing for 30 s")
    assert not replica.healthy and pool.candidates(MISTRAL.id) == []


async def test_a_backend_that_refuses_its_probe_is_taken_out_of_routing() -> None:
    pool, replica = probed(grpc.StatusCode.UNAVAILABLE, healthy=True, streams=sending(1))
    await pool.refresh()
    assert not replica.healthy and pool.candidates(MISTRAL.id) == []


async def test_a_backend_out_of_routing_comes_back_only_by_answering_in_time() -> None:
    pool, replica = probed(grpc.StatusCode.DEADLINE_EXCEEDED, healthy=False)
    await pool.refresh()
    assert not replica.healthy and pool.candidates(MISTRAL.id) == []
    replica.stub = cast(Any, ProbeStub(None, MISTRAL))
    await pool.refresh()
    assert replica.healthy and pool.candidates(MISTRAL.id) == [replica]


async def test_a_stall_of_the_only_request_on_a_silent_backend_takes_it_out() -> None:
    # The stalled generation has left its stream: nothing runs there any more, but nothing
    # came from the backend for the whole timeout either. It is hung.
    streams = Streams(running=0, last_message=asyncio.get_running_loop().time() - 100)
    pool, replica = probed(None, healthy=True, streams=streams)
    pool.stalled(replica, "sent nothing for 30 s")
    assert not replica.healthy


async def test_a_late_probe_of_a_backend_running_nothing_of_ours_keeps_it_routed() -> None:
    streams = Streams(running=0, last_message=asyncio.get_running_loop().time() - 100)
    pool, replica = probed(grpc.StatusCode.DEADLINE_EXCEEDED, healthy=True, streams=streams)
    await pool.refresh()
    assert replica.healthy  # nothing to judge it by; a request sent there would show a hang
