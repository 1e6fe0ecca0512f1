"""An event loop on a virtual clock, for tests of code that waits on time.

`loop.time()` starts at 0 and moves only when nothing is ready to run: then it jumps to the
next timer instead of sleeping. `asyncio.sleep`, `call_later`, `wait_for` and everything
that reads `loop.time()` see exact times, however busy the machine is, and a test of a
100 ms interval takes no real 100 ms. Code that reads another clock (time.monotonic) is
given `loop.time` in its place.

`@virtual_time` runs an async test on a fresh loop of this kind (pytest-asyncio's session
loop runs on the real clock).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVarTuple

_Ts = TypeVarTuple("_Ts")


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Polls instead of blocking when a timer is due later, and moves the clock to it."""

    def __init__(self, advance: Callable[[float], None]) -> None:
        super().__init__()
        self._advance = advance

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # None: no timer at all, so only another thread can wake the loop: wait for real.
        if timeout is not None and timeout > 0:
            self._advance(timeout)
            timeout = 0
        return super().select(timeout)  # type: ignore[no-any-return]


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._now = 0.0
        self.timers_scheduled = 0  # call_at/call_later calls: how often code asks to wake
        super().__init__(_JumpingSelector(self._advance))

    def call_at(
        self,
        when: float,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        self.timers_scheduled += 1
        return super().call_at(when, callback, *args, context=context)

    def time(self) -> float:
        return self._now

    def _advance(self, seconds: float) -> None:
        self._now += seconds


def virtual_time(
    test: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., None]:
    """Runs the async test `test` on a `VirtualTimeLoop` (fixtures are passed through)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            runner.run(test(*args, **kwargs))

    return run
