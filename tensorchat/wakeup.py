"""`Wakeup`: one task waits, callbacks on the same loop wake it; optionally until a time.

The stream paths (an engine's OutputChannel and a GenerateMany session's writer in the
service, a Generation's reader in the facade) wake their one reader many thousand times a
second. A bare future per wait is the cheapest way to do
that in asyncio: no waiter set and no clear() as with asyncio.Event, and a wake with no
one waiting costs a check.
"""

from __future__ import annotations

import asyncio


class Wakeup:
    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    async def wait(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until the next `wake()`; only one task may wait at a time."""
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def wait_until(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Until the next `wake()` or the loop time `when`, whichever comes first."""
        timer = loop.call_at(when, self.wake)
        try:
            await self.wait(loop)
        finally:
            timer.cancel()

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
