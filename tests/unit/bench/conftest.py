"""A fake OpenAI endpoint in a background thread, for tests that run the client's own loops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from tensorchat.bench.fake_server import FakeOpenAIServer


class ThreadedServer:
    def __init__(self, tokens_per_second: float = 0.0) -> None:
        self.server = FakeOpenAIServer(0, tokens_per_second)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(5)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def threaded_server() -> Iterator[FakeOpenAIServer]:
    with ThreadedServer() as server:
        yield server
