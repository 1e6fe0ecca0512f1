"""GenerationRun's end of a stream when the server's shutdown cancel lands at its last byte,
and which failures it retries on another replica.

A stream's events go out from a task of their own, awaited by the request's task
(facade/generation_run.py `_stream`). The request's task wakes one loop turn after that task
ended; a cancel in that turn (the end of uvicorn's shutdown grace) stops nothing, and must not
make a finished stream look cut short, nor lose what the events' task raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast
from unittest.mock import MagicMock

import grpc
import pytest
from starlette.types import Message

from facade.admission import Admitted
from facade.backend_streams import EOF, Stalled
from facade.backends import Backend
from facade.deps import FacadeState
from facade.generation_run import GenerationRun
from tensorchat.request_error import RequestError


class _Delta:
    index = 0

    def HasField(self, name: str) -> bool:  # protobuf's name
        return name == "delta"


class _Generation:
    """Two deltas, then the end; each read takes a loop turn, as a real one waits."""

    def __init__(self) -> None:
        self._left = [_Delta(), _Delta()]

    async def read(self) -> Any:
        await asyncio.sleep(0)
        return self._left.pop(0) if self._left else EOF

    def done(self) -> bool:
        return not self._left

    def cancel(self) -> bool:
        return False


class _Encoder:
    def start(self) -> bytes:
        return b""

    def response(self, message: Any) -> bytes:
        return b"data: delta\n\n"

    def end(self, usage: Any) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, error: Any) -> bytes:
        return b"data: error\n\n"


async def _nothing(*_: Any) -> None:
    return None


def _request() -> tuple[GenerationRun, SimpleNamespace]:
    async def start(rpc: Any, limit: Any) -> _Generation:
        return _Generation()

    backend = SimpleNamespace(generations=SimpleNamespace(start=start))
    state = SimpleNamespace(
        metrics=MagicMock(),
        gate=MagicMock(),
        settings=SimpleNamespace(request_time_limit_s=0),
        pool=SimpleNamespace(
            candidates=lambda _: [backend], use=lambda _: contextlib.nullcontext()
        ),
    )
    record = SimpleNamespace(final_status=None, finish_reasons=[], generation_id="g")
    run = SimpleNamespace(
        entry=SimpleNamespace(id="m", fingerprint="f"),
        rpcs=[object()],
        req=SimpleNamespace(stream=True, n=1, model="m", user=None),
        shape=SimpleNamespace(encoder=lambda *_: _Encoder(), keep=_nothing),
        lease=SimpleNamespace(release=_nothing, levels=None),
        started=time.perf_counter(),
        completion_id="c",
        created=0,
        record=record,
    )
    return GenerationRun(cast(FacadeState, state), cast(Admitted, run)), record


async def _run_cancelled_at_the_last_body(
    failing_send: Callable[[Message], bool] = lambda _: False,
) -> tuple[list[Message], SimpleNamespace, BaseException | None]:
    """Runs a stream whose task is cancelled in the loop turn its last body went out in."""
    response, record = _request()
    loop = asyncio.get_running_loop()
    sent: list[Message] = []
    tasks: list[asyncio.Task[None]] = []

    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if sent and not sent[-1].get("more_body", True):
            raise RuntimeError("Unexpected ASGI message sent, after response already completed.")
        if failing_send(message):
            loop.call_soon(tasks[0].cancel)
            raise OSError("the client's socket broke")
        sent.append(message)
        if message["type"] == "http.response.body" and not message["more_body"]:
            loop.call_soon(tasks[0].cancel)  # the shutdown grace ends in this very turn

    tasks.append(asyncio.create_task(response({"type": "http"}, receive, send)))
    outcome: BaseException | None = None
    try:
        await tasks[0]
    except BaseException as error:  # the outcome is what is asserted
        outcome = error
    return sent, record, outcome


async def test_a_stream_that_ended_stays_ended_when_the_cancel_comes_after_its_last_byte() -> None:
    sent, record, outcome = await _run_cancelled_at_the_last_body()
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert bodies == [b"data: delta\n\n", b"data: delta\n\n", b"data: [DONE]\n\n"]
    assert record.final_status == 200  # counted and logged as the 200 it was, not a 503
    assert isinstance(outcome, asyncio.CancelledError)  # the shutdown still stops the task


async def test_what_the_events_task_raised_is_not_lost_to_a_late_cancel() -> None:
    def last_body(message: Message) -> bool:
        return message["type"] == "http.response.body" and not message["more_body"]

    _, _, outcome = await _run_cancelled_at_the_last_body(failing_send=last_body)
    assert isinstance(outcome, OSError)


@pytest.fixture(autouse=True)
def _no_unretrieved_task_errors(caplog: pytest.LogCaptureFixture) -> Any:
    yield
    assert "exception was never retrieved" not in caplog.text


# Which failures send the request to another replica, and which take its replica out ------


@pytest.mark.parametrize(
    ("error", "retried", "judged"),
    [
        (RequestError(grpc.StatusCode.UNAVAILABLE, "connection reset"), True, "mark_down"),
        (RequestError(grpc.StatusCode.UNAVAILABLE, "draining"), True, "mark_down"),
        # A stall: the pool tells a hung replica from a busy one (test_facade_backends.py).
        (Stalled(grpc.StatusCode.UNAVAILABLE, "sent nothing"), True, "stalled"),
        (RequestError(grpc.StatusCode.INVALID_ARGUMENT, "bad"), False, None),
    ],
)
def test_an_unavailable_backend_is_retried_elsewhere_and_a_stall_is_judged_by_the_pool(
    error: RequestError, retried: bool, judged: str | None
) -> None:
    run, _ = _request()
    calls: list[tuple[str, str]] = []
    pool = cast(Any, run.state.pool)
    pool.mark_down = lambda backend, reason: calls.append(("mark_down", reason))
    pool.stalled = lambda backend, reason: calls.append(("stalled", reason))
    assert run._retryable(error, cast(Backend, object())) is retried
    assert calls == ([(judged, error.message)] if judged else [])
