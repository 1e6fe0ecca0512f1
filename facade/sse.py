"""Server-sent events framing and client-disconnect detection for the chat stream.

OpenAI streams are data-only SSE: each event is `data: <json>\\n\\n` and the stream ends
with `data: [DONE]\\n\\n`. An error after the 200 went out cannot change the status, so it
is sent as one more event, `data: {"error": {...}}`, followed by `data: [DONE]` (what vLLM
does and what the openai SDK raises as an APIError).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import Receive

from facade.errors import APIError

DONE = b"data: [DONE]\n\n"

SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Proxies (nginx) must pass each event on at once instead of buffering the stream.
    (b"x-accel-buffering", b"no"),
]


def error_event(error: APIError) -> bytes:
    return b"data: " + error.body() + b"\n\n"


class DisconnectWatcher:
    """Waits for the client to go away and calls `on_disconnect` at that moment.

    Reading `receive()` is how an ASGI app learns of a closed connection as soon as the
    server does, instead of when the next write fails or by polling; the RPC behind the
    request is then cancelled at once. Start it only after the request body was read.
    """

    def __init__(self, receive: Receive, on_disconnect: Callable[[], None]) -> None:
        self.disconnected = False
        self._receive = receive
        self._on_disconnect = on_disconnect
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="disconnect-watcher")

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
        self.disconnected = True
        self._on_disconnect()

    def stop(self) -> None:
        # Forget the task as it is cancelled: the cancelled task's traceback holds the
        # `_watch` frame and so this watcher. A watcher still holding the task would make a
        # reference cycle per request (with the request's whole GenerationRun hanging off
        # `on_disconnect`) that only the cyclic garbage collector could free, at a CPU cost
        # paid on every request.
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
