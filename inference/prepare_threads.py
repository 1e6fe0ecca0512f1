"""The preparation threads: templating and tokenizing off the event loop, at a small cost per hop.

`loop.run_in_executor(ThreadPoolExecutor)` costs 16-17 CPU µs per call with 32 in flight (a
trivial function; benchmarks/prepare_hop.py, issue 20): a concurrent Future,
a work item, the executor's idle semaphore and thread bookkeeping, an asyncio Future chained to
it, and one wake-up of the loop per result. Here the threads take jobs from one SimpleQueue and
hand results back in batches: a thread that finishes a job while an earlier hand-back is still
pending adds to it instead of waking the loop again. That costs 3.4-7.7 CPU µs per call.

As with run_in_executor, a job whose caller was cancelled before a thread took it never runs;
one already running finishes and its result is dropped.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")

# (the caller's loop, its future, the function, its arguments)
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]
# (the future, the result, the exception or None)
_Done = tuple["asyncio.Future[Any]", Any, BaseException | None]


class PrepareThreads:
    """`count` daemon threads, started on first use, that run jobs for asyncio callers. The
    threads hold only the shared `_Work`, not this object: once it is collected they end, as
    ThreadPoolExecutor's workers do, so a server that stopped leaves none behind."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._work = _Work()
        self._lock = threading.Lock()
        self._started = False

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on one of the threads."""
        if not self._started:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._work.jobs.put((loop, future, function, args))
        return await future

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        for i in range(self._count):
            threading.Thread(target=self._work.serve, name=f"prepare_{i}", daemon=True).start()
        weakref.finalize(self, self._work.stop, self._count)


class _Work:
    """The job queue and the hand-backs, shared by the threads (see PrepareThreads)."""

    def __init__(self) -> None:
        self.jobs: SimpleQueue[_Job | None] = SimpleQueue()  # None: a thread's last job
        self._lock = threading.Lock()
        # Finished jobs per loop, not yet handed back; a loop is in here while a hand-back
        # to it is scheduled.
        self._done: dict[asyncio.AbstractEventLoop, list[_Done]] = {}

    def stop(self, threads: int) -> None:
        for _ in range(threads):
            self.jobs.put(None)

    def serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            loop, future, function, args = job
            if future.cancelled():
                continue  # its caller went away before the job started
            try:
                done: _Done = (future, function(*args), None)
            except BaseException as error:  # handed to the caller, as run_in_executor does
                done = (future, None, error)
            with self._lock:
                pending = self._done.get(loop)
                if pending is not None:
                    pending.append(done)  # a hand-back is already on its way
                    continue
                self._done[loop] = [done]
            try:
                loop.call_soon_threadsafe(self._hand_back, loop)
            except RuntimeError:  # the loop closed: nobody is waiting any more
                with self._lock:
                    self._done.pop(loop, None)

    def _hand_back(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            done = self._done.pop(loop)
        for future, result, error in done:
            if future.cancelled():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
