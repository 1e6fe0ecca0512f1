"""One request's outputs on their way from an engine to its reader, merged while unread.

Every engine hands outputs over through an `OutputChannel`, so the three behaviours the
stream depends on live in one place:

- A reader that lags gets everything produced since its last read, merged into one output
  per choice, instead of a backlog of one-token items.
- `take(hold_s)` paces a reader: outputs are held until `hold_s` after the previous take,
  so a busy server sends fewer, larger messages (each message costs the same CPU, whatever
  it carries). While it holds, new tokens wake nobody.
- An output that finishes a choice is never held: pacing delays tokens by at most
  `hold_s`, but never the end of a request, as with vLLM's `--stream-interval`.
- `drained` says when every choice's finishing output has been handed over: the end of
  the engine's stream.

All methods run on the event loop (engines with worker threads hop over first).
"""

from __future__ import annotations

import asyncio
import math

from inference.engines.base import SequenceOutput
from tensorchat.wakeup import Wakeup


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
    """Engine side: `put`, `fail`. Reader side: `take`. See the module docstring."""

    __slots__ = (
        "_error",
        "_finishing",
        "_holding",
        "_last_take",
        "_unfinished",
        "_unread",
        "_wakeup",
    )

    def __init__(self, choices: int) -> None:
        self._unfinished = set(range(choices))  # choices whose finish was not handed over
        self._unread: dict[int, SequenceOutput] = {}
        self._error: BaseException | None = None
        self._finishing = False  # an unread output finishes a choice
        self._holding = False  # the reader waits for its pacing interval to pass
        self._wakeup = Wakeup()
        self._last_take = -math.inf  # the first output is never held: it is the TTFT

    @property
    def drained(self) -> bool:
        """Every choice's finishing output was handed over: the stream is complete."""
        return not self._unfinished

    def put(self, outputs: list[SequenceOutput]) -> None:
        for output in outputs:
            merge_output(self._unread, output)
            if output.finish is not None:
                self._finishing = True
        if outputs and (self._finishing or not self._holding):
            self._wakeup.wake()

    def fail(self, error: BaseException) -> None:
        """Ends the stream with `error`: the reader's next `take` raises it."""
        if self._error is None:
            self._error = error
        self._wakeup.wake()

    async def take(self, hold_s: float = 0.0) -> list[SequenceOutput]:
        """Waits for output, then returns all of it, one output per choice in index order.

        With `hold_s` > 0 it returns no earlier than `hold_s` after the previous take, unless
        a choice finished meanwhile.
        """
        loop = asyncio.get_running_loop()
        while self._error is None:
            if self._unread:
                release_at = self._last_take + hold_s
                if self._finishing or loop.time() >= release_at:
                    break
                self._holding = True
                try:
                    await self._wakeup.wait_until(loop, release_at)
                finally:
                    self._holding = False
            else:
                await self._wakeup.wait(loop)
        if self._error is not None:
            raise self._error
        unread, self._unread = self._unread, {}
        self._finishing = False
        self._last_take = loop.time()
        outputs = list(unread.values())
        if len(outputs) > 1:
            outputs.sort(key=_by_index)
        for output in outputs:
            if output.finish is not None:
                self._unfinished.discard(output.index)
        return outputs


def _by_index(output: SequenceOutput) -> int:
    return output.index
