"""The disconnect watcher: it reports a disconnect, and a stopped one is freed at once."""

from __future__ import annotations

import asyncio
import gc
import weakref

from starlette.types import Message, Receive

from facade.sse import DisconnectWatcher


def _receive(event: asyncio.Event) -> Receive:
    async def receive() -> Message:
        await event.wait()
        return {"type": "http.disconnect"}

    return receive


async def test_a_disconnect_is_reported() -> None:
    left = asyncio.Event()
    seen: list[bool] = []
    watcher = DisconnectWatcher(_receive(left), lambda: seen.append(True))
    watcher.start()
    await asyncio.sleep(0)
    left.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert watcher.disconnected and seen == [True]


async def test_a_stopped_watcher_is_freed_without_the_cyclic_gc() -> None:
    # One per request: a reference cycle here made the GC collect every ~20 requests.
    gc.collect()
    gc.disable()
    try:
        watcher = DisconnectWatcher(_receive(asyncio.Event()), lambda: None)
        freed = weakref.ref(watcher)
        watcher.start()
        await asyncio.sleep(0)  # waiting in receive()
        watcher.stop()
        await asyncio.sleep(0)  # the cancellation runs
        del watcher
        assert freed() is None
    finally:
        gc.enable()
