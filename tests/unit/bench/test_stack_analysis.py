"""The stack benchmark's window arithmetic, profile summary and CPU layout (stackbench)."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from benchmarks.stackbench.cpu import busy_neighbour, cpu_layout
from benchmarks.stackbench.plan import Plan
from benchmarks.stackbench.profile import profile_summary
from benchmarks.stackbench.servers import process
from benchmarks.stackbench.window import analyse, counted_between
from tensorchat.bench.stats import RequestResult


def paced(start: float, rate: float, tokens: int, lag: float = 0.0) -> RequestResult:
    """A request whose token k arrives at start + k / rate + lag, one token per message."""
    times = [start + k / rate + lag for k in range(tokens)]
    return RequestResult(
        start=start,
        end=times[-1],
        ok=True,
        ttft=times[0] - start,
        chunk_times=times,
        chunk_sizes=[1] * tokens,
        sizes_are_tokens=True,
        output_tokens=tokens,
    )


def plan(streams: int) -> Plan:
    return Plan(
        streams=streams, rate=100.0, output_tokens=200, prompt_tokens=8,
        duration=10.0, warmup=2.0, workers=1, tick_ms=5.0,
    )  # fmt: skip


def test_a_stack_that_keeps_up_delivers_what_is_emitted() -> None:
    # Two streams, each running back-to-back 2 s requests from t=0 to t=12.
    results = [paced(float(s), 100.0, 200) for s in range(0, 12, 2) for _ in range(2)]
    figures = analyse(results, plan(2), 0.0, lambda lo, hi: 200 * (hi - lo))
    assert figures["offered_tokens"] == figures["emitted_tokens"] == 2 * 100 * 8
    assert figures["delivered_over_emitted"] == pytest.approx(1.0, abs=0.002)
    assert figures["delivered_over_offered"] == pytest.approx(1.0, abs=0.002)
    assert figures["itl_ms"]["p50"] == pytest.approx(10.0)
    assert figures["tokens_per_message"] == pytest.approx(1.0)


def test_a_stack_that_falls_behind_scores_below_one() -> None:
    # The engine emits at full pace but tokens arrive at 80% of it, so each closed-loop
    # request takes 2.5 s.
    results = [paced(i * 2.5, 80.0, 200) for i in range(6) for _ in range(2)]
    figures = analyse(results, plan(2), 0.0, lambda lo, hi: 200 * (hi - lo))
    assert figures["delivered_over_emitted"] == pytest.approx(0.8, abs=0.03)
    assert figures["delivered_over_offered"] == pytest.approx(0.8, abs=0.03)


def test_idle_streams_count_against_offered_not_emitted() -> None:
    # Each stream waits 0.5 s between 2 s requests: the engine generates during 6 of the
    # window's 8 s (2.5-4.5, 5-7, 7.5-9.5) and everything it emits arrives.
    results = [paced(i * 2.5, 100.0, 200) for i in range(6) for _ in range(2)]
    emitted = sum(n for r in results for t, n in r.token_times() if 2.0 <= t < 10.0)
    figures = analyse(results, plan(2), 0.0, lambda lo, hi: emitted)
    assert figures["delivered_over_emitted"] == pytest.approx(1.0)
    assert figures["delivered_over_offered"] == pytest.approx(0.75)
    assert figures["emitted_over_offered"] == pytest.approx(0.75)


def test_no_engine_count_leaves_delivered_over_emitted_undefined() -> None:
    results = [paced(float(s), 100.0, 200) for s in range(0, 12, 2)]
    figures = analyse(results, plan(1), 0.0)
    assert figures["emitted_tokens"] is None
    assert math.isnan(figures["delivered_over_emitted"])
    assert figures["delivered_over_offered"] == pytest.approx(1.0, abs=0.002)


def test_counted_between_interpolates_the_samples() -> None:
    samples = [(0.0, 0), (1.0, 100), (2.0, 300)]
    assert counted_between(samples, 0.5, 1.5) == pytest.approx(150.0)
    assert counted_between(samples, -1.0, 3.0) == pytest.approx(300.0)
    assert math.isnan(counted_between([], 0.0, 1.0))


def test_failed_requests_count_against_delivery() -> None:
    ok = [paced(float(s), 100.0, 200) for s in range(0, 12, 2)]
    failed = RequestResult(start=0.0, end=1.0, error="grpc_UNAVAILABLE")
    figures = analyse([*ok, failed], plan(2), 0.0)
    assert figures["delivered_over_offered"] == pytest.approx(0.5, abs=0.002)
    assert figures["errors"] == {"grpc_UNAVAILABLE": 1}


def test_profile_summary_self_and_inclusive(tmp_path: Path) -> None:
    raw = tmp_path / "p.raw"
    raw.write_text(
        "main (a.py:1);loop (b.py:2);write (c.py:3) 6\n"
        "main (a.py:1);loop (b.py:2);encode (d.py:4) 3\n"
        "main (a.py:1);loop (b.py:9);encode (d.py:5) 1\n"
    )
    summary = profile_summary(raw)
    assert summary["self"][:2] == [("write (c.py)", 0.6), ("encode (d.py)", 0.4)]
    # main and loop are on every stack: left out of the inclusive ranking.
    assert [name for name, _ in summary["inclusive"]] == ["write (c.py)", "encode (d.py)"]


def test_busy_neighbour_burns_cpu_and_stops() -> None:
    def busy(burners: list[psutil.Popen]) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in burners)

    with busy_neighbour(1.5) as burners:
        # The arguments they were started with (/proc cmdline can be empty while they exec).
        assert [p.args[-1] for p in burners] == ["1.0", "0.5"]
        # They spin until killed, so their CPU time passes what a bare interpreter's start
        # costs (~0.05 s) however busy the machine is; how soon depends on the machine, so
        # this waits for it (pytest-timeout stops a burner that never burns).
        while busy(burners) < 0.6:
            time.sleep(0.1)
    assert all(not p.is_running() or p.status() == "zombie" for p in burners)
    with busy_neighbour(0.0) as none:
        assert none == []


def test_pinned_layout_gives_the_service_a_cpu_of_its_own(tmp_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    service, others = cpu_layout()
    assert len(service) == 1 and others and not service & others
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    with process(sleeper, tmp_path / "sleeper.log", cpus=service) as proc:
        assert set(proc.cpu_affinity()) == service
