"""Drive the load: closed-loop concurrency or Poisson arrivals, split over worker processes.

One Python process receiving ~30,000 streamed messages per second spends most of a core on
it, so the load is split over `workers` processes (each its own event loop, connection
pool and share of the concurrency and arrival rate), started together. Each worker reports
its own CPU time, so a report can say whether the client was near its limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import queue
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tensorchat.bench.senders import open_sender
from tensorchat.bench.stats import RequestResult
from tensorchat.bench.target import Target
from tensorchat.bench.workload import RequestSpec

ResultCallback = Callable[[RequestResult], None]


@dataclass(frozen=True, slots=True)
class LoadShape:
    """How requests are issued.

    Closed loop: `concurrency` users each send their next request when the previous ends.
    Open loop: Poisson arrivals at `request_rate` per second, at most `concurrency` in flight
    (None: unbounded). With `duration_s`, requests are issued (cycling over the specs) until
    that many seconds have passed; in-flight requests still finish and count.

    `ramp_up_s` (closed loop only) starts the users evenly over that many seconds instead of
    all at once. Users whose requests all take the same time otherwise stay in lockstep: all
    of them arrive together, again and again, and each wave measures admitting a burst of
    `concurrency` requests rather than steady serving.
    """

    concurrency: int | None = 1
    request_rate: float | None = None
    duration_s: float | None = None
    ramp_up_s: float = 0.0

    def __post_init__(self) -> None:
        if self.request_rate is None and not self.concurrency:
            raise ValueError("a closed loop needs a concurrency >= 1")
        if self.request_rate is not None and not self.request_rate > 0:
            raise ValueError("request_rate must be > 0")
        if self.ramp_up_s < 0:
            raise ValueError("ramp_up_s must be >= 0")
        if self.ramp_up_s and self.request_rate is not None:
            raise ValueError("a ramp-up is for a closed loop; Poisson arrivals are spread already")

    @property
    def label(self) -> str:
        if self.request_rate is None:
            ramp = f", ramp-up {self.ramp_up_s:g}s" if self.ramp_up_s else ""
            return f"concurrency={self.concurrency}{ramp}"
        cap = "" if self.concurrency is None else f", max concurrency={self.concurrency}"
        return f"rate={self.request_rate:g}/s{cap}"

    def split(self, workers: int) -> list[LoadShape]:
        """Each worker's share; concurrency and rate split as evenly as they go.

        Callers keep `workers <= concurrency` so that every share has a user.
        """
        shares = []
        for w in range(workers):
            conc = None
            if self.concurrency is not None:
                conc = self.concurrency // workers + (1 if w < self.concurrency % workers else 0)
            rate = None if self.request_rate is None else self.request_rate / workers
            shares.append(LoadShape(conc, rate, self.duration_s, self.ramp_up_s))
        return shares


@dataclass(slots=True)
class WorkerReport:
    results: list[RequestResult]
    cpu_s: float
    wall_s: float

    @property
    def cpu_utilization(self) -> float:
        """Share of one core the worker used while it ran (1.0 = a full core)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else math.nan


@dataclass(slots=True)
class RunOutcome:
    shape: LoadShape
    results: list[RequestResult]
    workers: list[WorkerReport] = field(default_factory=list)


async def drive(
    target: Target,
    specs: Sequence[RequestSpec],
    shape: LoadShape,
    *,
    seed: int = 0,
    start_at: float | None = None,
    on_result: ResultCallback | None = None,
) -> WorkerReport:
    """Run one worker's share of the load in this event loop."""
    if not specs:
        return WorkerReport([], 0.0, 0.0)
    async with open_sender(target, shape.concurrency) as sender:
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        cpu0, wall0 = time.process_time(), time.monotonic()
        results = await issue(sender.send, specs, shape, seed=seed, on_result=on_result)
        return WorkerReport(results, time.process_time() - cpu0, time.monotonic() - wall0)


async def issue(
    send: Callable[[RequestSpec], Awaitable[RequestResult]],
    specs: Sequence[RequestSpec],
    shape: LoadShape,
    *,
    seed: int = 0,
    on_result: ResultCallback | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[RequestResult]:
    """Sends `specs` (cycling over them while `shape.duration_s` lasts) as `shape` says.

    `clock` is the time the schedule is kept on, and asyncio.sleep waits on the loop's: a
    test on a virtual-time loop passes `loop.time` (tests/support/virtual_time.py).
    """
    results: list[RequestResult] = []
    stop_at = None if shape.duration_s is None else clock() + shape.duration_s
    index = 0

    def next_spec() -> RequestSpec | None:
        nonlocal index
        if stop_at is not None:
            if clock() >= stop_at:
                return None
        elif index >= len(specs):
            return None
        spec = specs[index % len(specs)]
        index += 1
        return spec

    async def record(spec: RequestSpec) -> None:
        result = await send(spec)
        results.append(result)
        if on_result is not None:
            on_result(result)

    if shape.request_rate is None:
        users = shape.concurrency or 1

        async def user(k: int) -> None:
            await asyncio.sleep(shape.ramp_up_s * k / users)
            while (spec := next_spec()) is not None:
                await record(spec)

        await asyncio.gather(*(user(k) for k in range(users)))
    else:
        await _poisson(shape, next_spec, record, random.Random(seed), clock)
    return results


async def _poisson(
    shape: LoadShape,
    next_spec: Callable[[], RequestSpec | None],
    record: Callable[[RequestSpec], Any],
    rng: random.Random,
    clock: Callable[[], float],
) -> None:
    assert shape.request_rate is not None
    slots = asyncio.Semaphore(shape.concurrency) if shape.concurrency else None
    tasks: set[asyncio.Task[None]] = set()

    async def run(spec: RequestSpec) -> None:
        # The request's clock starts when it is sent, after waiting for a slot.
        if slots is None:
            await record(spec)
        else:
            async with slots:
                await record(spec)

    due = clock()
    while (spec := next_spec()) is not None:
        task = asyncio.create_task(run(spec))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        due += rng.expovariate(shape.request_rate)
        await asyncio.sleep(max(0.0, due - clock()))
    if tasks:
        await asyncio.gather(*tasks)


def _event_loop_runner(target: Target) -> asyncio.Runner:
    # uvloop makes the HTTP client's per-event cost lower; grpc.aio runs on its own poller
    # and is only supported on the default loop.
    if target.kind == "http":
        with contextlib.suppress(ImportError):
            import uvloop

            return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def _worker_process(
    worker: int,
    target: Target,
    specs: Sequence[RequestSpec],
    shape: LoadShape,
    seed: int,
    messages: Any,
    go: Any,
    start_at: Any,
) -> None:
    """Entry point of a spawned worker: wait for the common start, run, report back."""

    def tick(result: RequestResult) -> None:
        messages.put(("tick", worker, result.ok))

    try:
        messages.put(("ready", worker, None))
        go.wait()
        with _event_loop_runner(target) as runner:
            report = runner.run(
                drive(target, specs, shape, seed=seed, start_at=start_at.value, on_result=tick)
            )
        messages.put(("done", worker, report))
    except BaseException as exc:  # report any failure instead of hanging the parent
        messages.put(("failed", worker, f"{type(exc).__name__}: {exc}"))
        raise


def run_load(
    target: Target,
    specs: Sequence[RequestSpec],
    shape: LoadShape,
    *,
    workers: int = 1,
    seed: int = 0,
    progress: Callable[[bool], None] | None = None,
) -> RunOutcome:
    """Run the load to completion in `workers` processes (1: in this process)."""
    if shape.concurrency is not None:
        workers = max(1, min(workers, shape.concurrency))
    if workers <= 1:
        tick = None if progress is None else (lambda r: progress(r.ok))
        with _event_loop_runner(target) as runner:
            report = runner.run(drive(target, specs, shape, seed=seed, on_result=tick))
        return RunOutcome(shape, report.results, [report])
    return _run_processes(target, specs, shape, workers, seed, progress)


def _run_processes(
    target: Target,
    specs: Sequence[RequestSpec],
    shape: LoadShape,
    workers: int,
    seed: int,
    progress: Callable[[bool], None] | None,
) -> RunOutcome:
    # spawn, not fork: the parent may hold gRPC or event-loop state that must not be forked.
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    go = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    shares = shape.split(workers)
    procs = [
        ctx.Process(
            target=_worker_process,
            args=(w, target, list(specs[w::workers]), shares[w], seed + w, messages, go, start_at),
            name=f"bench-worker-{w}",
            daemon=True,
        )
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    reports: dict[int, WorkerReport] = {}
    ready = 0
    try:
        while len(reports) < workers:
            try:
                kind, worker, payload = messages.get(timeout=1.0)
            except queue.Empty:
                dead = [p.name for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"bench worker died: {', '.join(dead)}") from None
                continue
            if kind == "ready":
                ready += 1
                if ready == workers:
                    # A common start a little ahead, so no worker gets a head start.
                    start_at.value = time.monotonic() + 0.2
                    go.set()
            elif kind == "tick" and progress is not None:
                progress(payload)
            elif kind == "done":
                reports[worker] = payload
            elif kind == "failed":
                raise RuntimeError(f"bench worker {worker} failed: {payload}")
    finally:
        go.set()
        for proc in procs:
            proc.join(timeout=5.0)
            if proc.is_alive():
                proc.terminate()
    ordered = [reports[w] for w in range(workers)]
    results = [r for report in ordered for r in report.results]
    return RunOutcome(shape, results, ordered)
