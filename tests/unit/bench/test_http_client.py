"""Both HTTP clients (httpx, raw) against the fake OpenAI endpoint: timings, usage, errors."""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator

import pytest

from tensorchat.bench.fake_server import FakeOpenAIServer
from tensorchat.bench.senders import open_sender
from tensorchat.bench.stats import summarize
from tensorchat.bench.target import Target
from tensorchat.bench.workload import RequestSpec

SPEC = RequestSpec(messages=(("user", "hi there"),), max_tokens=20)


@pytest.fixture(params=["httpx", "raw"])
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    server = FakeOpenAIServer(0, tokens_per_second=0)
    await server.start()
    yield server
    await server.stop()


def target(server: FakeOpenAIServer, client: str, **kwargs: object) -> Target:
    model = str(kwargs.pop("model", "m"))
    return Target(kind="http", address=server.url, model=model, http_client=client, **kwargs)  # type: ignore[arg-type]


async def test_streamed_request_is_timed_per_event_and_counts_usage(
    server: FakeOpenAIServer, client: str
) -> None:
    async with open_sender(target(server, client, ignore_eos=True, temperature=0.0), 4) as sender:
        result = await sender.send(SPEC)
    assert result.ok and result.error is None
    assert result.output_tokens == 20
    assert result.prompt_tokens == 7
    assert result.finish_reason == "length"
    # The role-only first chunk carries no output: 20 content events.
    assert len(result.chunk_times) == 20
    assert result.ttft is not None and 0 < result.ttft <= result.latency
    assert result.chunk_times == sorted(result.chunk_times)
    body = server.bodies[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["temperature"] == 0.0
    assert body["messages"] == [{"role": "user", "content": "hi there"}]
    assert body["max_tokens"] == 20


async def test_unary_request(server: FakeOpenAIServer, client: str) -> None:
    async with open_sender(target(server, client, stream=False), 1) as sender:
        result = await sender.send(SPEC)
        again = await sender.send(SPEC)  # over the kept-alive connection
    assert again.ok and server.requests == 2
    assert result.ok and result.output_tokens == 20 and result.ttft is None
    assert "stream_options" not in server.bodies[-1]


async def test_paced_stream_inter_token_latency(client: str) -> None:
    server = FakeOpenAIServer(0, tokens_per_second=200)
    await server.start()
    try:
        async with open_sender(target(server, client), 1) as sender:
            result = await sender.send(SPEC)
    finally:
        await server.stop()
    gaps = [b - a for a, b in zip(result.chunk_times, result.chunk_times[1:], strict=False)]
    assert statistics.median(gaps) == pytest.approx(0.005, abs=0.002)
    assert summarize([result]).tpot_ms.mean == pytest.approx(5.0, abs=1.5)


@pytest.mark.parametrize(
    ("model", "error"), [("missing", "http_404"), ("broken-stream", "stream_error")]
)
async def test_server_errors_are_classified(
    server: FakeOpenAIServer, client: str, model: str, error: str
) -> None:
    async with open_sender(target(server, client, model=model), 1) as sender:
        result = await sender.send(SPEC)
        after = await sender.send(RequestSpec(SPEC.messages, 3))
    assert not result.ok
    assert result.error == error
    assert not after.ok  # the same model fails again, on a connection that still works


async def test_connection_refused_is_an_error_not_an_exception(client: str) -> None:
    dead = Target("http", "http://127.0.0.1:9/v1", "m", timeout_s=2, http_client=client)
    async with open_sender(dead, 1) as sender:
        result = await sender.send(SPEC)
    assert not result.ok
    assert result.error == {"httpx": "ConnectError", "raw": "ConnectionRefusedError"}[client]


def test_chat_url_accepts_base_or_full_path() -> None:
    assert Target("http", "http://h/v1/", "m").chat_url == "http://h/v1/chat/completions"
    assert Target("http", "http://h/chat/completions", "m").chat_url.endswith("h/chat/completions")


async def test_timeout_is_an_error_kind(client: str) -> None:
    server = FakeOpenAIServer(0, tokens_per_second=20)  # 20 tokens take a second
    await server.start()
    try:
        async with open_sender(target(server, client, timeout_s=0.2), 1) as sender:
            result = await sender.send(SPEC)
    finally:
        await server.stop()
    assert not result.ok and result.error == "ReadTimeout"
    # Never early, and it cut the stream short: the server had 20 tokens to send.
    assert result.latency >= 0.2
    assert len(result.chunk_times) < 20
