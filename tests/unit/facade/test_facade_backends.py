"""Routing table logic: names and aliases, 404 vs 503, least-outstanding choice of replica.

The backends here are records with no channel behind them (nothing is called); the same
pool against real inference servers is covered in tests/integration/facade.
"""

from __future__ import annotations

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


def pool_of(*backends: Backend) -> BackendPool:
    pool = BackendPool([b.target for b in backends])
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


def probed(code: grpc.StatusCode | None, *, healthy: bool) -> tuple[BackendPool, Backend]:
    replica = backend("a", MISTRAL)
    replica.healthy = healthy
    replica.stub = cast(Any, ProbeStub(code, MISTRAL))
    return pool_of(replica), replica


async def test_a_routed_backend_slow_to_answer_its_probe_stays_routed_as_busy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool, replica = probed(grpc.StatusCode.DEADLINE_EXCEEDED, healthy=True)
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


async def test_a_backend_that_refuses_its_probe_is_taken_out_of_routing() -> None:
    pool, replica = probed(grpc.StatusCode.UNAVAILABLE, healthy=True)
    await pool.refresh()
    assert not replica.healthy and pool.candidates(MISTRAL.id) == []


async def test_a_backend_out_of_routing_comes_back_only_by_answering_in_time() -> None:
    pool, replica = probed(grpc.StatusCode.DEADLINE_EXCEEDED, healthy=False)
    await pool.refresh()
    assert not replica.healthy and pool.candidates(MISTRAL.id) == []
    replica.stub = cast(Any, ProbeStub(None, MISTRAL))
    await pool.refresh()
    assert replica.healthy and pool.candidates(MISTRAL.id) == [replica]
