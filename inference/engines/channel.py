"""One request's outputs on their way from an engine to its reader, merged while unread.

Every engine puts its outputs into an `OutputChannel` and yields what iterating it gives,
so these rules live here, not in the engines: a lagging reader gets everything since its
last read merged into one output per choice; iterating holds outputs until the request's
`pace()` has passed since the previous take (`inference.pacing.Hold`), but never an output
that finishes a choice; `drained` says every choice's finish was handed over. All methods
run on the event loop (engines with worker threads hop over first).
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable

from inference.engines.base import SequenceOutput, unpaced
from inference.pacing import Hold


def merge_output(unread: dict[int, SequenceOutput], output: SequenceOutput) -> None:
    """Add `output` to the unread outputs, merged into its choice's unfinished one if any."""
    previous = unread.get(output.index)
    if previous is None:
        unread[output.index] = output
        return
    if previous.finish is not None:
        return  # nothing follows the end of a choice
    previous.token_ids.extend(output.token_ids)
    if output.logprobs is not None:
        if previous.logprobs is None:
            previous.logprobs = []
        previous.logprobs.extend(output.logprobs)
    previous.finish = output.finish
    previous.stop_token_id = output.stop_token_id
    previous.cached_tokens = output.cached_tokens


class OutputChannel:
    """Engine side: `put`, `fail`. Reader side: iterate, or `take`. See the module docstring."""

    __slots__ = ("_error", "_hold", "_pace", "_unfinished", "_unread")

    def __init__(self, choices: int, pace: Callable[[], float] = unpaced) -> None:
        self._unfinished = set(range(choices))  # choices whose finish was not handed over
        self._unread: dict[int, SequenceOutput] = {}
        self._error: BaseException | None = None
        self._pace = pace
        self._hold = Hold()

    @property
    def drained(self) -> bool:
        """Every choice's finishing output was handed over: the stream is complete."""
        return not self._unfinished

    def put(self, outputs: list[SequenceOutput]) -> None:
        finishing = False
        for output in outputs:
            merge_output(self._unread, output)
            finishing = finishing or output.finish is not None
        if outputs:
            self._hold.added(urgent=finishing)

    def fail(self, error: BaseException) -> None:
        """Ends the stream with `error`: the reader's next `take` raises it."""
        if self._error is None:
            self._error = error
        self._hold.stop()

    def __aiter__(self) -> OutputChannel:
        return self

    async def __anext__(self) -> list[SequenceOutput]:
        """The next hand-over, paced by `pace()` (no generator: no extra frame per message)."""
        if self.drained:
            raise StopAsyncIteration
        return await self.take(self._pace())

    async def take(self, hold_s: float = 0.0) -> list[SequenceOutput]:
        """Waits for output, then returns all of it, one output per choice in index order.

        With `hold_s` > 0 it returns no earlier than `hold_s` after the previous take, unless
        a choice finished meanwhile.
        """
        loop = asyncio.get_running_loop()
        await self._hold.until_due(loop, hold_s)
        if self._error is not None:
            raise self._error
        unread, self._unread = self._unread, {}
        self._hold.taken(loop)
        outputs = list(unread.values())
        if len(outputs) > 1:
            outputs.sort(key=operator.attrgetter("index"))
        for output in outputs:
            if output.finish is not None:
                self._unfinished.discard(output.index)
        return outputs
