"""PrepareThreads: jobs run on its threads, results and errors reach their callers, a job
whose caller went away before it started never runs."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from inference.prepare_threads import PrepareThreads


async def test_results_and_errors_reach_their_own_callers_from_other_threads() -> None:
    threads = PrepareThreads(3)
    loop_thread = threading.get_ident()

    def job(i: int) -> tuple[int, int]:
        if i % 7 == 3:
            raise ValueError(f"job {i}")
        return i, threading.get_ident()

    outcomes = await asyncio.gather(
        *(threads.run(job, i) for i in range(200)), return_exceptions=True
    )
    for i, outcome in enumerate(outcomes):
        if i % 7 == 3:
            assert isinstance(outcome, ValueError) and str(outcome) == f"job {i}"
        else:
            assert isinstance(outcome, tuple)
            assert outcome[0] == i
            assert outcome[1] != loop_thread


async def test_a_job_whose_caller_was_cancelled_before_it_started_never_runs() -> None:
    threads = PrepareThreads(1)
    entered, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def blocking() -> str:
        entered.set()
        release.wait(30)
        ran.append("blocking")
        return "blocking"

    def queued() -> str:
        ran.append("queued")
        return "queued"

    first = asyncio.ensure_future(threads.run(blocking))
    await asyncio.to_thread(entered.wait, 30)
    second = asyncio.ensure_future(threads.run(queued))
    await asyncio.sleep(0)  # `second` is queued behind `blocking`
    second.cancel()
    release.set()
    assert await first == "blocking"
    with pytest.raises(asyncio.CancelledError):
        await second
    assert await threads.run(lambda: "after") == "after"  # the thread went on to the next job
    assert ran == ["blocking"]


async def test_its_threads_end_once_it_is_gone() -> None:
    before = set(threading.enumerate())
    threads = PrepareThreads(2)
    assert await threads.run(lambda: 1) == 1
    workers = [t for t in threading.enumerate() if t not in before]
    assert sorted(t.name for t in workers) == ["prepare_0", "prepare_1"]
    del threads
    gc.collect()
    for worker in workers:
        await asyncio.to_thread(worker.join, 30)
    assert not any(worker.is_alive() for worker in workers)
