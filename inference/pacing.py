"""Pacing: how often a stream may send a message, and the one hold that enforces it.

Every message costs the service's one event loop the same CPU whatever it carries, so the
messages per second of all streams together are capped: past its share, a stream's tokens
share messages. `Hold` is the one rule for "collect, then hand over at most once per
interval, never holding something urgent (a first token, a finish)": a request's
`OutputChannel` uses it with its share, a GenerateMany session's writer with the flush interval.
"""

from __future__ import annotations

import asyncio
import math

from tensorchat.wakeup import Wakeup

# At ~100 µs of service CPU per message all told, 0.6-0.8 of the loop's core: 256 streams get
# a message each per 40 ms (3200 leaves more headroom; benchmarks/README.md measures both).
DEFAULT_MESSAGES_PER_SECOND = 6400.0

# At 6,400 messages/s a GenerateMany write then carries ~26 of them; the hold adds at most
# this to the 40 ms between two messages of a stream, and nothing to the TTFT. 4 ms rather
# than 2: 0.90-0.94 of the service's and the facade's CPU per token at 8, 128 and 512 streams
# (each gRPC message costs both sides far more than the events in it), ITL p50 unchanged and
# p99 within 3 ms at 512 streams (benchmarks/README.md, "Issue 20, fourth session").
DEFAULT_FLUSH_INTERVAL_S = 0.004


# Below the budget's share (fewer than max_messages_per_second x this streams), a stream
# still waits this long between messages; 0: every engine step may send one. Off by default:
# at 8 streams x 120 tokens/s, 20 ms cut CPU per token by 27-41% in the facade and 15-30% in
# the service, but the ITL p50 went from 7.5-8.3 to 21 ms, and 10 ms (about one token's gap)
# saved nothing (benchmarks/README.md, issue 20). Where CPU is scarce, the share already paces.
DEFAULT_MIN_STREAM_INTERVAL_S = 0.0


def stream_interval(
    running_streams: int,
    messages_per_second: float,
    min_interval_s: float = DEFAULT_MIN_STREAM_INTERVAL_S,
) -> float:
    """The least seconds between two messages of one stream (0: no pacing): its share of the
    budget, and at least `min_interval_s` (the first token and a finish are never held)."""
    share = running_streams / messages_per_second if messages_per_second > 0 else 0.0
    return max(share, min_interval_s)


class Hold:
    """Writers call `added`, or `stop` to let the reader go for good (an error, the end); the
    reader awaits `until_due`, takes everything, then calls `taken`. All on the event loop."""

    __slots__ = ("_collected", "_holding", "_stopped", "_taken_at", "_urgent", "_wakeup")

    def __init__(self) -> None:
        self._wakeup = Wakeup()
        self._collected = self._urgent = self._stopped = False
        self._holding = False  # the reader waits out its interval: non-urgent adds wake nobody
        self._taken_at = -math.inf  # the first take is never held: it is the TTFT

    def added(self, urgent: bool) -> None:
        self._collected = True
        self._urgent = self._urgent or urgent
        if urgent or not self._holding:
            self._wakeup.wake()

    def stop(self) -> None:
        self._stopped = True
        self._wakeup.wake()

    async def until_due(self, loop: asyncio.AbstractEventLoop, hold_s: float) -> None:
        """Returns once stopped, or once something was collected and either something urgent
        waits or `hold_s` passed since the previous take."""
        while not self._stopped:
            if not self._collected:
                await self._wakeup.wait(loop)
                continue
            release_at = self._taken_at + hold_s
            if self._urgent or loop.time() >= release_at:
                return
            self._holding = True
            try:
                await self._wakeup.wait_until(loop, release_at)
            finally:
                self._holding = False

    def taken(self, loop: asyncio.AbstractEventLoop) -> None:
        self._collected = self._urgent = False
        self._taken_at = loop.time()
