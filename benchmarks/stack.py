#!/usr/bin/env python3
"""The stack benchmark: can the Python frontend carry ~30,000 tokens/s over 256 streams?

The inference service runs the synthetic engine (no compute: every stream emits
`--rate` tokens/s on the wall clock) and the facade runs in front of it, each in its own
process, as in production. `tensorchat bench` drives `--streams` concurrent streams in a
closed loop, started evenly over one request's duration (`--ramp-up`: requests of equal
length started together would stay in lockstep), and the same load is measured at four
points:

  engine  the synthetic engine read in-process: the floor every layer adds to
  fake    a trivially fast SSE server paced the same way: what the client itself can take
  grpc    client -> gRPC Generate -> inference service
  rest    client -> HTTP/SSE -> facade -> gRPC -> inference service

Reported per point: delivered/emitted tokens in a steady-state window, TTFT and message
gaps (inter-token latency), and for grpc/rest what the layer adds over the one below
(median TTFT, p99 inter-token latency), plus each process's CPU use.

Three token counts over the window [warmup, duration]:
  offered    streams x rate x window: every stream busy all the time
  emitted    what the engine generated, from its own counter (GetStats `generated_tokens`,
             sampled every 0.25 s and interpolated at the window's edges)
  delivered  what the client received
delivered/emitted says whether the stack carries what the engine produces (a stack that
falls behind delivers late); emitted/offered is the engine's duty, below 1 by the time
streams sit idle between requests (TTFT, the client's turnaround); delivered/offered is the
product, the strictest figure.

Run from the repository root:  .venv/bin/python benchmarks/stack.py --json stack.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.engines.base import GenerationRequest  # noqa: E402
from inference.engines.synthetic import SyntheticEngine  # noqa: E402
from inference.sampling import SamplingParams  # noqa: E402
from tensorchat.bench.report import machine  # noqa: E402
from tensorchat.bench.runner import LoadShape, RunOutcome, WorkerReport, run_load  # noqa: E402
from tensorchat.bench.stats import Distribution, RequestResult  # noqa: E402
from tensorchat.bench.target import Target  # noqa: E402
from tensorchat.bench.workload import LengthDist, synthetic_requests  # noqa: E402

API_KEY = "stack-bench-key"
MODEL = "synthetic"
POINTS = ("engine", "fake", "grpc", "rest")
# The servers are started with the real `tensorchat` command, as an operator would.
TENSORCHAT = (sys.executable, "-m", "tensorchat", "--log-level", "warning")


@dataclass(frozen=True)
class Plan:
    streams: int
    rate: float
    output_tokens: int
    prompt_tokens: int
    duration: float
    warmup: float
    workers: int
    tick_ms: float
    # The inference service's --max-messages-per-second (None: its default).
    messages_per_second: float | None = None
    # Seconds over which the streams start (0: all at once, then in lockstep waves).
    ramp_up: float = 0.0
    # Cores a separate busy process keeps busy throughout (see busy_neighbour).
    neighbour_cores: float = 0.0
    # The inference service alone on one CPU, everything else on the others (see cpu_layout).
    pin: bool = False

    @property
    def nominal(self) -> float:
        return self.streams * self.rate


# -- measurement --------------------------------------------------------------------------


class GeneratedCounter:
    """Samples an engine's generated-token counter in the background, to read it at any time."""

    def __init__(self, read: Callable[[], int], interval: float = 0.25) -> None:
        self._read = read
        self._interval = interval
        self._samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="generated-counter", daemon=True)

    def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self._samples.append((time.monotonic(), self._read()))
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> GeneratedCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, lo: float, hi: float) -> float:
        """Tokens generated in [lo, hi]."""
        return counted_between(self._samples, lo, hi)


def counted_between(samples: Sequence[tuple[float, int]], lo: float, hi: float) -> float:
    """The growth of a sampled counter over [lo, hi], interpolating between samples."""

    def at(t: float) -> float:
        for (t1, v1), (t2, v2) in itertools.pairwise(samples):
            if t1 <= t <= t2:
                return v1 + (v2 - v1) * (t - t1) / (t2 - t1) if t2 > t1 else v1
        return float(samples[0][1] if t < samples[0][0] else samples[-1][1])

    return at(hi) - at(lo) if samples else math.nan


def analyse(
    results: Sequence[RequestResult],
    plan: Plan,
    t0: float,
    emitted_between: Callable[[float, float], float] | None = None,
) -> dict[str, Any]:
    """Window figures: token counts, TTFT of requests sent in it, message gaps in it.

    `emitted_between(lo, hi)` counts what the engine generated (None: no engine behind).
    """
    lo, hi = t0 + plan.warmup, t0 + plan.duration
    offered = plan.streams * plan.rate * (hi - lo)
    emitted = emitted_between(lo, hi) if emitted_between is not None else math.nan
    delivered = 0.0
    ttft: list[float] = []
    gaps: list[float] = []
    per_message: list[float] = []
    for r in results:
        times = r.token_times()
        delivered += sum(n for t, n in times if lo <= t < hi)
        if lo <= r.start < hi and r.ttft is not None:
            ttft.append(r.ttft)
        previous = None
        for t, n in times:
            if previous is not None and lo <= t < hi:
                gaps.append(t - previous)
                per_message.append(n)
            previous = t
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            errors[r.error or "unknown"] = errors.get(r.error or "unknown", 0) + 1
    return {
        "requests": len(results),
        "errors": errors,
        "window_s": plan.duration - plan.warmup,
        "offered_tokens": round(offered),
        "emitted_tokens": None if math.isnan(emitted) else round(emitted),
        "delivered_tokens": round(delivered),
        "delivered_over_emitted": delivered / emitted if emitted > 0 else math.nan,
        "emitted_over_offered": emitted / offered,
        "delivered_over_offered": delivered / offered,
        "delivered_tokens_per_s": delivered / (plan.duration - plan.warmup),
        "ttft_ms": Distribution.of(ttft, 1000.0).to_json(),
        "itl_ms": Distribution.of(gaps, 1000.0).to_json(),
        "tokens_per_message": sum(per_message) / len(per_message) if per_message else math.nan,
    }


# -- the four points ----------------------------------------------------------------------


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
            request = GenerationRequest(f"e{counter}", list(range(plan.prompt_tokens)), params)
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


def _drive(plan: Plan, target: Target) -> tuple[RunOutcome, float]:
    specs = synthetic_requests(
        256, LengthDist.parse(str(plan.prompt_tokens)), LengthDist.parse(str(plan.output_tokens))
    )
    shape = LoadShape(concurrency=plan.streams, duration_s=plan.duration, ramp_up_s=plan.ramp_up)
    outcome = run_load(target, specs, shape, workers=plan.workers)
    t0 = min(r.start for r in outcome.results)
    return outcome, t0


# -- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def process(
    args: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    cpus: set[int] | None = None,
) -> Iterator[psutil.Popen]:
    """Start a server process in `cwd` (its tree's packages come first on sys.path), on
    `cpus` if given (else where this process may run); on exit, SIGTERM it (then SIGKILL)
    by its own pid."""
    handle = log.open("w")
    proc = psutil.Popen(
        args,
        cwd=cwd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        # Set in the child before exec, so that every thread the server starts inherits it.
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except psutil.TimeoutExpired:
                proc.kill()
        handle.close()


def wait_until(check: Any, what: str, proc: psutil.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def grpc_ready(address: str) -> bool:
    import grpc

    from tensorchat.v1 import inference_pb2 as pb
    from tensorchat.v1 import inference_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        models = pb_grpc.InferenceStub(channel).ListModels(pb.ListModelsRequest(), timeout=2)
        return any(m.id == MODEL for m in models.models)


def grpc_generated_tokens(address: str) -> Callable[[], int]:
    """Reads the inference service's generated-token counters (all models) over GetStats."""
    import grpc

    from tensorchat.v1 import inference_pb2 as pb
    from tensorchat.v1 import inference_pb2_grpc as pb_grpc

    stub = pb_grpc.InferenceStub(grpc.insecure_channel(address))

    def read() -> int:
        stats = stub.GetStats(pb.GetStatsRequest(), timeout=2)
        return sum(model.generated_tokens for model in stats.models)

    return read


def http_ready(url: str) -> bool:
    import httpx

    response = httpx.get(f"{url}/models", headers={"authorization": f"Bearer {API_KEY}"})
    return response.status_code == 200 and MODEL in response.text


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU of one process, every thread (its children are not ours: py-spy)."""
    times = proc.cpu_times()
    return float(times.user + times.system)


class CpuMeter:
    """CPU seconds of some processes over a measured span.

    Also the machine's: `busy` (all processes, cores) and `steal` (cores the hypervisor gave
    to other guests). On a shared VM these say whether a point measured the stack or its
    neighbours: the same code varies by 10x in TTFT between a quiet and a stolen minute.
    """

    def __init__(self, procs: dict[str, psutil.Process]) -> None:
        self._procs = procs
        self._start: dict[str, float] = {}
        self._machine_start = psutil.cpu_times()
        self._t0 = 0.0

    def __enter__(self) -> CpuMeter:
        self._start = {name: cpu_seconds(p) for name, p in self._procs.items()}
        self._machine_start = psutil.cpu_times()
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self._t0
        self.cores = {
            name: round((cpu_seconds(p) - self._start[name]) / wall, 3)
            for name, p in self._procs.items()
        }
        now, then = psutil.cpu_times(), self._machine_start
        idle = (now.idle + now.iowait) - (then.idle + then.iowait)
        # guest time is already inside user time in /proc/stat
        fields = [f for f in now._fields if not f.startswith("guest")]
        total = sum(getattr(now, f) - getattr(then, f) for f in fields)
        steal = getattr(now, "steal", 0.0) - getattr(then, "steal", 0.0)
        self.machine = {
            "busy_cores": round((total - idle - steal) / wall, 3),
            "steal_cores": round(steal / wall, 3),
        }


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Sample a server with py-spy (if installed) while the load runs."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return None
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "50",
         "--format", "raw", "--output", str(out), "--nonblocking", "--gil"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _frame(name: str) -> str:
    # "func (path/file.py:123)" -> "func (path/file.py)": lines of one function add up.
    head, _, tail = name.rpartition(":")
    return head + ")" if tail.endswith(")") and tail[:-1].isdigit() else name


def profile_summary(raw: Path, limit: int = 20) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive time per function from py-spy's raw (collapsed stacks) output."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    if not total:
        return {"self": [], "inclusive": []}

    def ranked(counts: dict[str, int], skip_roots: bool) -> list[tuple[str, float]]:
        # Frames on (nearly) every stack are the event loop's own; they say nothing.
        items = [(k, v / total) for k, v in counts.items() if not (skip_roots and v / total > 0.9)]
        return sorted(items, key=lambda kv: -kv[1])[:limit]

    return {"self": ranked(own, False), "inclusive": ranked(inclusive, True)}


def cpu_layout() -> tuple[set[int], set[int]]:
    """(the inference service's CPU, everyone else's) for `--pin`.

    On a GPU host the model process has cores of its own and the facade runs on others, or
    on other machines; on a small machine where all processes share all cores, every layer
    also slows the others down by the CPU it takes. Pinning the service alone on one CPU
    and the facade, the client and the fake server on the rest keeps that apart.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    return {cpus[0]}, set(cpus[1:])


# Busy for DUTY of every millisecond until killed; a bare interpreter starts in ~20 ms.
_BURN = """
import sys, time
duty = float(sys.argv[1])
while True:
    until = time.perf_counter() + 0.001 * duty
    while time.perf_counter() < until:
        pass
    time.sleep(0.001 * (1.0 - duty))
"""


@contextlib.contextmanager
def busy_neighbour(cores: float) -> Iterator[list[psutil.Popen]]:
    """Keeps `cores` of CPU busy in other processes, in 1 ms slices, while the block runs.

    On a machine where every layer shares the same cores, a layer slows the others down by
    the CPU it takes as well as by what it does. Running the gRPC point beside a neighbour
    as busy as the facade separates the two: what is left of the REST-over-gRPC TTFT is the
    facade's own path.
    """
    duties = [1.0] * int(cores) + ([cores % 1] if cores % 1 > 0 else [])
    burners = [psutil.Popen([sys.executable, "-c", _BURN, str(d)]) for d in duties]
    try:
        yield burners
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


# -- orchestration ------------------------------------------------------------------------


def default_checkpoint() -> Path:
    """The embedded default model's checkpoint dir: the synthetic model borrows its tokenizer."""
    from inference.engines.torch.loader import default_model_gguf, prepare_gguf_checkpoint

    return prepare_gguf_checkpoint(default_model_gguf())


def write_models_config(directory: Path, checkpoint: Path, plan: Plan) -> Path:
    path = directory / "models.yaml"
    path.write_text(
        "models:\n"
        f"  - id: {MODEL}\n"
        "    engine: synthetic\n"
        f"    checkpoint: {checkpoint}\n"
        f"    options: {{tokens_per_second: {plan.rate}, tick_ms: {plan.tick_ms}}}\n"
    )
    return path


def summarize_point(
    name: str,
    results: Sequence[RequestResult],
    t0: float,
    plan: Plan,
    extra: dict[str, Any],
    counter: GeneratedCounter | None = None,
) -> dict[str, Any]:
    figures = analyse(results, plan, t0, counter.between if counter is not None else None)
    tps = figures["delivered_tokens_per_s"]
    msgs = tps / figures["tokens_per_message"] if figures["tokens_per_message"] else math.nan
    cores = dict(extra.get("cpu_cores", {}))
    for i, c in enumerate(extra.get("client_cpu_per_worker", [])):
        cores[f"client{i}"] = c
    # CPU per delivered token and per message: the capacity model (tokens/s per core).
    figures["cpu_us_per_token"] = {k: round(c / tps * 1e6, 1) for k, c in cores.items() if tps}
    figures["cpu_us_per_message"] = {k: round(c / msgs * 1e6, 1) for k, c in cores.items() if msgs}
    figures.update(extra)
    itl = figures["itl_ms"]
    print(
        f"{plan.streams:>4} streams {name:>6}: delivered/emitted"
        f" {figures['delivered_over_emitted']:.4f}, delivered/offered"
        f" {figures['delivered_over_offered']:.4f} ({tps:.0f} of {plan.nominal:.0f} tok/s),"
        f" TTFT p50/p99 {figures['ttft_ms']['p50']}/{figures['ttft_ms']['p99']} ms,"
        f" ITL p50/p99 {itl['p50']}/{itl['p99']} ms,"
        f" {figures['tokens_per_message']:.2f} tok/msg, errors {figures['errors']},"
        f" CPU cores {cores}, machine {extra.get('machine', {})}",
        flush=True,
    )
    return figures


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
            outcome, t0 = _drive(plan, target)
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
        _drive(replace(self.plans[0], duration=3.0, warmup=0.0, ramp_up=0.0), target)
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
        grpc_port, http_port = free_port(), free_port()
        inference_args = [
            *TENSORCHAT,
            "inference",
            "--models",
            str(models),
            "--port",
            str(grpc_port),
        ]
        if plans[0].messages_per_second is not None:
            inference_args += ["--max-messages-per-second", str(plans[0].messages_per_second)]
        inf_log = work / "inference.log"
        with process(inference_args, inf_log, cpus=service_cpus) as inference:
            address = f"127.0.0.1:{grpc_port}"
            wait_until(lambda: grpc_ready(address), "inference", inference, inf_log, 300)
            generated = grpc_generated_tokens(address)
            if "grpc" in points:
                target = Target("grpc", address, MODEL, ignore_eos=True)
                session.sweep("grpc", target, {"inference": inference}, generated)
            if "rest" in points:
                facade_args = [
                    *TENSORCHAT,
                    "facade",
                    "--backends",
                    address,
                    "--port",
                    str(http_port),
                ]
                env = {
                    "TENSORCHAT_API_KEYS": API_KEY,
                    "TENSORCHAT_KEYS_FILE": str(work / "keys.json"),
                }
                fac_log = work / "facade.log"
                with process(facade_args, fac_log, env) as facade:
                    url = f"http://127.0.0.1:{http_port}/v1"
                    wait_until(lambda: http_ready(url), "facade", facade, fac_log, 120)
                    target = Target(
                        "http", url, MODEL, api_key=API_KEY, ignore_eos=True, http_client="raw"
                    )
                    session.sweep(
                        "rest", target, {"inference": inference, "facade": facade}, generated
                    )
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


def added_by_layers(points: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Median TTFT and p99 inter-token latency each layer adds over the one below it."""
    added: dict[str, Any] = {}
    for upper, lower in (("grpc", "engine"), ("rest", "grpc")):
        if upper in points and lower in points:
            up, low = points[upper], points[lower]
            added[f"{upper}_over_{lower}"] = {
                "ttft_p50_ms": round(up["ttft_ms"]["p50"] - low["ttft_ms"]["p50"], 3),
                "itl_p99_ms": round(up["itl_ms"]["p99"] - low["itl_ms"]["p99"], 3),
            }
    return added


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--streams", default="256", help="concurrent streams; several levels: 32,64,256"
    )
    parser.add_argument("--rate", type=float, default=120.0, help="tokens/s per stream")
    parser.add_argument("--output-tokens", type=int, default=480, help="max_tokens per request")
    parser.add_argument("--prompt-tokens", type=int, default=64, help="prompt words")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds issuing requests")
    parser.add_argument("--warmup", type=float, default=6.0, help="seconds left out of the window")
    parser.add_argument(
        "--ramp-up",
        type=float,
        help="seconds over which the streams start (default: one request's duration,"
        " output tokens / rate, so that requests arrive evenly; 0: all at once, and then in"
        " lockstep waves, since every request takes the same time)",
    )
    parser.add_argument("--workers", type=int, default=1, help="client processes")
    parser.add_argument("--tick-ms", type=float, default=5.0, help="synthetic engine tick")
    parser.add_argument(
        "--max-messages-per-second",
        type=float,
        help="the inference service's message budget (default: its own default)",
    )
    parser.add_argument(
        "--neighbour-cores",
        type=float,
        default=0.0,
        help="keep this much CPU busy in another process throughout, e.g. the facade's CPU"
        " beside the grpc point, to tell contention for the cores from a layer's own latency",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the inference service alone on the first CPU and the facade, the client"
        " and the fake server on the others, as on a GPU host where the service has cores"
        " of its own (default: every process may run on every CPU)",
    )
    parser.add_argument("--points", default=",".join(POINTS), help=f"subset of {POINTS}")
    parser.add_argument("--checkpoint", type=Path, help="tokenizer checkpoint dir")
    parser.add_argument("--profile", type=Path, help="py-spy the servers; raw stacks go here")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    points = [p.strip() for p in args.points.split(",") if p.strip()]
    if unknown := set(points) - set(POINTS):
        parser.error(f"unknown points {sorted(unknown)}")
    ramp_up = args.output_tokens / args.rate if args.ramp_up is None else args.ramp_up
    plans = [
        Plan(
            streams=int(streams),
            rate=args.rate,
            output_tokens=args.output_tokens,
            prompt_tokens=args.prompt_tokens,
            duration=args.duration,
            warmup=args.warmup,
            workers=args.workers,
            tick_ms=args.tick_ms,
            messages_per_second=args.max_messages_per_second,
            ramp_up=ramp_up,
            neighbour_cores=args.neighbour_cores,
            pin=args.pin,
        )
        for streams in args.streams.split(",")
    ]
    if not 0 <= args.warmup < args.duration:
        parser.error("--warmup must be shorter than --duration")
    if ramp_up > args.warmup:
        parser.error(f"--warmup ({args.warmup:g}s) must cover the ramp-up ({ramp_up:g}s)")
    with busy_neighbour(args.neighbour_cores):
        result = run(plans, points, args.checkpoint, args.profile)
    print(json.dumps([{"streams": lv["streams"], **lv["added"]} for lv in result["levels"]]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
