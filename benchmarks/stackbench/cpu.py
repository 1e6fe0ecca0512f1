"""CPU: what each process and the machine spent, pinning, and a busy neighbour."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator

import psutil


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of one process, every thread (its children are not ours: py-spy).

    Read from the process's CPU clock (Linux, nanoseconds) where there is one: psutil's
    user + system come from /proc in 10 ms ticks, so a block that costs a floor server
    60 ms (1000 requests at 60 µs) would read 50 or 70 ms, ±17%, while the clock reads it
    to the microsecond. Elsewhere, psutil.
    """
    try:
        return time.clock_gettime(_process_clock(proc.pid))
    except (OSError, AttributeError, OverflowError):
        times = proc.cpu_times()
        return float(times.user + times.system)


def _process_clock(pid: int) -> int:
    # clock_getcpuclockid(pid), which Python does not expose: the kernel's
    # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED), all threads of the process, exited ones too.
    return ((~pid) << 3) | 2


def idle_cores(procs: dict[str, psutil.Process], seconds: float) -> dict[str, float]:
    """Each process's CPU use (cores) with no requests: background loops, probes."""
    before = {name: cpu_seconds(p) for name, p in procs.items()}
    time.sleep(seconds)
    return {name: (cpu_seconds(p) - before[name]) / seconds for name, p in procs.items()}


class CpuSpent:
    """CPU seconds each process spent over a block, less its idle use over the block's wall time.

    `per(units)` divides by the block's requests (or streams, tokens): CPU µs per unit, the
    figure that holds on a shared machine where latencies do not.
    """

    def __init__(self, procs: dict[str, psutil.Process], idle: dict[str, float]) -> None:
        self._procs = procs
        self._idle = idle
        self._start: dict[str, float] = {}
        self._t0 = 0.0
        self.wall_s = 0.0
        self.seconds: dict[str, float] = {}

    def __enter__(self) -> CpuSpent:
        self._start = {name: cpu_seconds(p) for name, p in self._procs.items()}
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.monotonic() - self._t0
        self.seconds = {
            name: cpu_seconds(p) - self._start[name] - self._idle.get(name, 0.0) * self.wall_s
            for name, p in self._procs.items()
        }

    def per(self, units: float) -> dict[str, float]:
        """CPU µs per unit of each process (NaN for no units)."""
        return {name: s / units * 1e6 if units else math.nan for name, s in self.seconds.items()}


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
