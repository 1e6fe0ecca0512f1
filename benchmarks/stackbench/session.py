"""One benchmark run: the four points, measured level by level, into one JSON document."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from benchmarks.stackbench.cpu import CpuMeter, cpu_layout
from benchmarks.stackbench.plan import API_KEY, MODEL, Plan
from benchmarks.stackbench.profile import profile_summary, py_spy
from benchmarks.stackbench.servers import (
    default_checkpoint,
    free_port,
    grpc_generated_tokens,
    process,
    start_facade,
    start_inference,
    wait_until,
    write_models_config,
)
from benchmarks.stackbench.window import GeneratedCounter, added_by_layers, summarize_point
from inference.engines.base import EngineRequest
from inference.engines.synthetic import SyntheticEngine
from inference.sampling import SamplingParams
from tensorchat.bench.report import machine
from tensorchat.bench.runner import LoadShape, RunOutcome, WorkerReport, run_load
from tensorchat.bench.stats import RequestResult
from tensorchat.bench.target import Target
from tensorchat.bench.workload import LengthDist, synthetic_requests


async def _engine_point(
    plan: Plan, vocab: Sequence[int]
) -> tuple[list[RequestResult], float, GeneratedCounter]:
    engine = SyntheticEngine(vocab_ids=vocab, tokens_per_second=plan.rate, tick_ms=plan.tick_ms)
    generated = GeneratedCounter(lambda: engine.stats().generated_tokens)
    results: list[RequestResult] = []
    t0 = time.monotonic()
    stop = t0 + plan.duration
    counter = 0

    rng = random.Random(0)

    async def user(k: int) -> None:
        nonlocal counter
        await asyncio.sleep(plan.ramp_up * k / plan.streams)
        while time.monotonic() < stop:
            # Requests reach a served engine at random phases of its tick; a closed loop here
            # would start every request right after a tick and always wait a full one.
            await asyncio.sleep(rng.uniform(0, plan.tick_ms / 1000.0))
            counter += 1
            params = SamplingParams(max_tokens=plan.output_tokens, ignore_eos=True)
            request = EngineRequest(f"e{counter}", list(range(plan.prompt_tokens)), params)
            r = RequestResult(start=time.monotonic(), sizes_are_tokens=True)
            async for outputs in engine.generate(request):
                now = time.monotonic()
                n = sum(len(o.token_ids) for o in outputs)
                if n:
                    r.ttft = now - r.start if r.ttft is None else r.ttft
                    r.chunk_times.append(now)
                    r.chunk_sizes.append(n)
                    r.output_tokens += n
            r.end, r.ok = time.monotonic(), True
            results.append(r)

    with generated:
        await asyncio.gather(*(user(k) for k in range(plan.streams)))
    return results, t0, generated


def drive_plan(plan: Plan, target: Target) -> tuple[RunOutcome, float]:
    """Run one level's closed-loop load on `target`; the outcome and its first send time."""
    specs = synthetic_requests(
        256, LengthDist.parse(str(plan.prompt_tokens)), LengthDist.parse(str(plan.output_tokens))
    )
    shape = LoadShape(concurrency=plan.streams, duration_s=plan.duration, ramp_up_s=plan.ramp_up)
    outcome = run_load(target, specs, shape, workers=plan.workers)
    t0 = min(r.start for r in outcome.results)
    return outcome, t0


def client_cpu(workers: list[WorkerReport]) -> list[float]:
    return [round(w.cpu_utilization, 3) for w in workers]


class Session:
    """One benchmark run: its scratch dir, results, and optional profiles."""

    def __init__(self, plans: Sequence[Plan], profile: Path | None) -> None:
        self.plans = plans
        self.profile = profile
        self.work = Path(tempfile.mkdtemp(prefix="stack-bench-"))
        self.levels: dict[int, dict[str, Any]] = {p.streams: {} for p in plans}

    def measure(
        self,
        name: str,
        plan: Plan,
        target: Target,
        procs: dict[str, psutil.Popen],
        generated: Callable[[], int] | None,
    ) -> None:
        spies = []
        if self.profile is not None:
            spies = [
                py_spy(proc.pid, plan.duration, self.work / f"{name}-{plan.streams}-{label}.raw")
                for label, proc in procs.items()
            ]
        counter = GeneratedCounter(generated) if generated is not None else None
        with CpuMeter(dict(procs)) as cpu, counter or contextlib.nullcontext():
            outcome, t0 = drive_plan(plan, target)
        extra = {
            "cpu_cores": cpu.cores,
            "client_cpu_per_worker": client_cpu(outcome.workers),
            "machine": cpu.machine,
        }
        self.levels[plan.streams][name] = summarize_point(
            name, outcome.results, t0, plan, extra, counter
        )
        for spy in spies:
            if spy is not None:
                spy.wait()

    def sweep(
        self,
        name: str,
        target: Target,
        procs: dict[str, psutil.Popen],
        generated: Callable[[], int] | None = None,
    ) -> None:
        """`generated` reads the engine's generated-token counter (None: no engine behind)."""
        # One short unmeasured run first: connections, caches and the servers' lazy paths.
        drive_plan(replace(self.plans[0], duration=3.0, warmup=0.0, ramp_up=0.0), target)
        for plan in self.plans:
            self.measure(name, plan, target, procs, generated)


def run(
    plans: Sequence[Plan], points: Sequence[str], checkpoint: Path | None, profile: Path | None
) -> dict[str, Any]:
    session = Session(plans, profile)
    work = session.work
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "load_average_before": os.getloadavg(),
        "plan": {k: v for k, v in plans[0].__dict__.items() if k != "streams"},
        "streams": [p.streams for p in plans],
    }
    service_cpus: set[int] | None = None
    if plans[0].pin:
        service_cpus, others = cpu_layout()
        # The client's workers and the other servers inherit this.
        os.sched_setaffinity(0, others)
    if "engine" in points:
        for plan in plans:
            results, t0, counter = asyncio.run(_engine_point(plan, range(1000, 9000)))
            session.levels[plan.streams]["engine"] = summarize_point(
                "engine", results, t0, plan, {}, counter
            )

    if "fake" in points:
        port = free_port()
        args = [sys.executable, "-m", "tensorchat.bench.fake_server", "--port", str(port),
                "--tokens-per-second", str(plans[0].rate)]  # fmt: skip
        log = work / "fake.log"
        with process(args, log) as proc:
            wait_until(lambda: socket.create_connection(("127.0.0.1", port)), "fake", proc, log, 30)
            url = f"http://127.0.0.1:{port}/v1"
            session.sweep("fake", Target("http", url, MODEL, http_client="raw"), {"fake": proc})

    if {"grpc", "rest"} & set(points):
        models = write_models_config(work, checkpoint or default_checkpoint(), plans[0])
        extra: list[str] = []
        if plans[0].messages_per_second is not None:
            extra = ["--max-messages-per-second", str(plans[0].messages_per_second)]
        if plans[0].min_stream_interval_ms is not None:
            extra += ["--min-stream-interval-ms", str(plans[0].min_stream_interval_ms)]
        with contextlib.ExitStack() as servers:
            inference, address = start_inference(
                servers, models, work, cpus=service_cpus, extra_args=extra
            )
            generated = grpc_generated_tokens(address)
            if "grpc" in points:
                target = Target("grpc", address, MODEL, ignore_eos=True)
                session.sweep("grpc", target, {"inference": inference}, generated)
            if "rest" in points:
                facade, url = start_facade(servers, address, work)
                target = Target(
                    "http", url, MODEL, api_key=API_KEY, ignore_eos=True, http_client="raw"
                )
                session.sweep("rest", target, {"inference": inference, "facade": facade}, generated)
    if profile:
        profile.mkdir(parents=True, exist_ok=True)
        for raw in sorted(work.glob("*.raw")):
            shutil.copy(raw, profile / raw.name)
            summary = profile_summary(raw)
            out.setdefault("profiles", {})[raw.stem] = {
                kind: [[name, round(share, 4)] for name, share in rows]
                for kind, rows in summary.items()
            }
    out["load_average_after"] = os.getloadavg()
    out["levels"] = [
        {"streams": streams, "points": points_, "added": added_by_layers(points_)}
        for streams, points_ in session.levels.items()
    ]
    return out
