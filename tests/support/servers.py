"""Real servers on loopback for tests: the gRPC inference service and the facade, each in its own
thread and event loop.

Their own loops matter: synchronous clients (the openai SDK, grpc's sync stubs) block the test's
thread, so a server sharing that thread's loop would deadlock.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import uvicorn

from facade.app import create_app
from facade.httpguard import server_options
from facade.settings import FacadeSettings
from inference.config import ModelsConfig
from inference.engines.base import Engine
from inference.registry import ModelRegistry, ServedModel
from inference.server import InferenceServer, ServerOptions

T = TypeVar("T")


class InferenceServerThread:
    """Loads a models config and serves it on 127.0.0.1:<free port> until `stop()`."""

    def __init__(self, config: ModelsConfig, **options: Any) -> None:
        self._config = config
        defaults: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "shutdown_grace": 1.0}
        self._options = ServerOptions(**{**defaults, **options})
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.server: InferenceServer | None = None

    def start(self, timeout: float = 300.0) -> InferenceServerThread:
        self._thread.start()
        self.server = self.call(self._start(), timeout=timeout)
        return self

    async def _start(self) -> InferenceServer:
        registry = await ModelRegistry.load(self._config)
        server = InferenceServer(registry, self._options)
        await server.start()
        return server

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"

    @property
    def engines(self) -> dict[str, Engine]:
        assert self.server is not None
        return {model.id: model.engine for model in self.server.registry}

    def model(self, name: str) -> ServedModel:
        assert self.server is not None
        model = self.server.registry.resolve(name)
        assert model is not None, f"{name} is not served"
        return model

    def active_requests(self) -> int:
        return sum(engine.stats().active_requests for engine in self.engines.values())

    def generated_tokens(self) -> int:
        """Tokens the engines generated so far (a counter: compare two readings)."""
        return sum(engine.stats().generated_tokens for engine in self.engines.values())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Runs a coroutine on the server's loop and waits for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def stop(self) -> None:
        if self.server is not None:
            self.call(self.server.stop(grace=0.5))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


class FacadeServerThread:
    """`create_app(settings)` served by uvicorn on 127.0.0.1:<free port> until `stop()`; or
    `app`, served the same way (the facade's protocol and limits), for a test of the server."""

    def __init__(self, settings: FacadeSettings, app: Any = None) -> None:
        self.settings = settings
        self.app = create_app(settings) if app is None else app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, **server_options(settings)
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self, timeout: float = 30.0) -> FacadeServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the facade did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        """Connections uvicorn serves now (those refused at the cap are not counted)."""
        return len(self._server.server_state.connections)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> FacadeServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
