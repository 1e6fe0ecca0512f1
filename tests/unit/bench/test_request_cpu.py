"""The request-CPU benchmark's parts (issue 20): the floor server, block medians, the goals."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import uvicorn

from benchmarks.request_cpu import parse_args, tree_labels
from benchmarks.stackbench.blocks import (
    Block,
    Summary,
    client_figures,
    cpu_figures,
    medians,
    versus,
)
from benchmarks.stackbench.cpu import cpu_seconds
from benchmarks.stackbench.floor import config
from benchmarks.stackbench.goals import Bounds, Goal, judge
from benchmarks.stackbench.servers import free_port
from tensorchat.bench.runner import LoadShape, run_load
from tensorchat.bench.stats import RequestResult
from tensorchat.bench.target import Target
from tensorchat.bench.workload import RequestSpec


@pytest.fixture
def floor_url() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(config(port, tokens_per_second=0.0))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the floor did not start"
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


def send(url: str, stream: bool, tokens: list[int]) -> list[RequestResult]:
    target = Target("http", url, "floor", stream=stream)
    specs = [RequestSpec((("user", "hello"),), max_tokens=n) for n in tokens]
    return run_load(target, specs, LoadShape(concurrency=2)).results


def test_the_floor_answers_what_the_bench_client_parses(floor_url: str) -> None:
    unary = send(floor_url, False, [1, 7])
    assert [(r.ok, r.error) for r in unary] == [(True, None)] * 2
    assert sorted(r.output_tokens for r in unary) == [1, 7]
    assert {r.finish_reason for r in unary} == {"length"}

    streams = send(floor_url, True, [5, 12])
    assert [(r.ok, r.error) for r in streams] == [(True, None)] * 2
    by_tokens = sorted(streams, key=lambda r: r.output_tokens)
    # One SSE event per token, each carrying text; the usage chunk gives the count.
    assert [r.output_tokens for r in by_tokens] == [5, 12]
    assert [len(r.chunk_times) for r in by_tokens] == [5, 12]
    assert all(r.ttft is not None and r.finish_reason == "length" for r in streams)


def block(phase: str, round_: int, point: str, **figures: float) -> Block:
    return Block(phase, round_, point, {"errors": 0.0, **figures})


def test_medians_over_rounds_sum_errors_and_skip_nan() -> None:
    blocks = [
        block("short", 0, "this", facade_us=500.0, ttft_p50_ms=math.nan),
        block("short", 1, "this", facade_us=700.0, ttft_p50_ms=math.nan, errors=2.0),
        block("short", 2, "this", facade_us=600.0, ttft_p50_ms=math.nan, errors=1.0),
        block("short", 0, "floor", floor_us=60.0),
        block("streams", 0, "this", facade_us=3000.0, events_per_stream=math.nan),
        block("streams", 1, "this", facade_us=2000.0, events_per_stream=80.0),
    ]
    summary = medians(blocks)
    assert summary["short"]["this"]["facade_us"] == 600.0
    assert summary["short"]["this"]["errors"] == 3.0  # summed, not a median of 0, 2, 1
    assert math.isnan(summary["short"]["this"]["ttft_p50_ms"])
    assert summary["short"]["floor"]["floor_us"] == 60.0
    assert summary["streams"]["this"]["facade_us"] == 2500.0
    assert summary["streams"]["this"]["events_per_stream"] == 80.0


def test_client_and_cpu_figures_of_a_block() -> None:
    def stream(start: float, times: list[float], tokens: int) -> RequestResult:
        return RequestResult(start=start, end=times[-1], ok=True, ttft=times[0] - start,
                             chunk_times=times, chunk_sizes=[1] * len(times),
                             output_tokens=tokens)  # fmt: skip

    failed = RequestResult(start=0.0, end=1.0, ok=False, error="http_500")
    results = [stream(0.0, [0.1, 0.2, 0.3], 6), stream(0.0, [0.3, 0.4, 0.5], 6), failed]
    figures = client_figures(results)
    assert figures["requests"] == 3 and figures["errors"] == 1
    assert figures["events_per_stream"] == 3.0
    assert figures["tokens_per_event"] == 2.0
    assert figures["ttft_p50_ms"] == pytest.approx(200.0)
    assert figures["itl_p50_ms"] == pytest.approx(100.0)
    cpu = cpu_figures({"facade": 3000.0, "inference": 600.0}, 200.0)
    assert cpu == {
        "facade_us": 3000.0,
        "facade_us_per_token": 15.0,
        "inference_us": 600.0,
        "inference_us_per_token": 3.0,
    }


def summary_of(**phases: dict[str, dict[str, float]]) -> Summary:
    """Hand-made medians; every point without errors unless it says so."""
    return {
        phase: {point: {"errors": 0.0, **figures} for point, figures in points.items()}
        for phase, points in phases.items()
    }


def verdicts(goals: list[Goal]) -> dict[tuple[int, str, str], bool]:
    return {(g.number, g.stack, g.what): g.met for g in goals}


def test_goals_met_and_not_met() -> None:
    summary = summary_of(
        short={
            "floor": {"floor_us": 60.0},
            "this": {"facade_us": 170.0, "inference_us": 190.0},
            "base": {"facade_us": 513.0, "inference_us": 400.0},
        },
        streams={
            "floor": {"floor_us": 2256.0},
            "this": {
                "facade_us": 2256.0,
                "facade_us_per_token": 11.0,
                "inference_us_per_token": 18.0,
            },
            "base": {
                "facade_us": 2998.0,
                "facade_us_per_token": 15.0,
                "inference_us_per_token": 19.0,
            },
        },
        burst={
            "this": {"ttft_p50_ms": 99.0, "ttft_p99_ms": 250.0},
            "base": {"ttft_p50_ms": 150.0, "ttft_p99_ms": 414.0},
        },
        delivery={
            "this": {"delivered_over_offered": 0.95},
            "base": {"delivered_over_offered": 0.84},
        },
        lowload={
            "floor": {"floor_us_per_token": 20.0},
            "this": {"facade_us_per_token": 22.0, "inference_us_per_token": 44.0},
            "base": {"facade_us_per_token": 59.0, "inference_us_per_token": 72.0},
        },
    )
    got = verdicts(judge(summary, ["this", "base"], ["base"]))
    assert got == {
        (1, "this", "facade CPU per request / the floor's"): True,  # 2.83x <= 3x
        (1, "this", "facade CPU per stream / the floor's"): True,  # exactly 1x
        (2, "this", "inference CPU per short request / base's"): True,  # 0.475 <= 0.5
        (3, "this", "burst TTFT p50 ms"): True,
        (3, "this", "burst TTFT p99 ms"): False,  # 250 is not under 250
        (3, "this", "delivered / ideal tokens"): True,
        (4, "this", "facade CPU per token at low load / the floor's"): True,  # 1.1x
        (4, "this", "inference CPU per token at low load / the floor's"): False,  # 2.2x
        (1, "base", "facade CPU per request / the floor's"): False,  # 8.55x
        (1, "base", "facade CPU per stream / the floor's"): False,
        (3, "base", "burst TTFT p50 ms"): False,
        (3, "base", "burst TTFT p99 ms"): False,
        (3, "base", "delivered / ideal tokens"): False,
        (4, "base", "facade CPU per token at low load / the floor's"): False,  # 2.95x
        (4, "base", "inference CPU per token at low load / the floor's"): False,  # 3.6x
    }
    # A looser bound is a flag away.
    loose = judge(summary, ["this"], [], Bounds(lowload_x=2.5))
    assert all(g.met for g in loose if g.number == 4)


def test_errors_nan_and_missing_phases() -> None:
    summary = summary_of(
        short={"floor": {"floor_us": 60.0}, "this": {"facade_us": 120.0, "inference_us": 1.0}},
        burst={"this": {"ttft_p50_ms": math.nan, "ttft_p99_ms": 10.0}},
    )
    summary["short"]["floor"]["errors"] = 1.0
    goals = judge(summary, ["this"], [])
    got = verdicts(goals)
    # 2x the floor would be met, but a request failed on one side of the ratio.
    assert got[(1, "this", "facade CPU per request / the floor's")] is False
    assert "1 errors" in goals[0].line() and "NOT MET" in goals[0].line()
    assert got[(3, "this", "burst TTFT p50 ms")] is False  # no figure is not a pass
    assert got[(3, "this", "burst TTFT p99 ms")] is True
    # Phases that did not run, and goal 2 without a before, are left out.
    assert {number for number, _, _ in got} == {1, 3}


def test_cpu_seconds_reads_finer_than_clock_ticks() -> None:
    # psutil's /proc figures move in 10 ms ticks; the process CPU clock does not.
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.137: pass\n"
    child = subprocess.Popen([sys.executable, "-c", code + "time.sleep(30)"])
    try:
        proc = psutil.Process(child.pid)
        while cpu_seconds(proc) < 0.137:
            time.sleep(0.01)
        spent = cpu_seconds(proc)
        assert spent == pytest.approx(proc.cpu_times().user + proc.cpu_times().system, abs=0.03)
        assert round(spent * 1e6) % 10_000 != 0
    finally:
        child.kill()
        child.wait()


def test_quick_changes_defaults_but_flags_win() -> None:
    quick = parse_args(["--quick", "--rounds", "3", "--phases", "short,burst"])
    assert quick.rounds == 3 and quick.requests == 300 and quick.phases == ["short", "burst"]
    assert parse_args([]).rounds == 6
    with pytest.raises(SystemExit):
        parse_args(["--phases", "short,nope"])
    with pytest.raises(SystemExit):  # the window must start after the ramp-up
        parse_args(["--delivery-tokens", "480", "--delivery-warmup", "3"])


def test_tree_labels_are_unique() -> None:
    labels = tree_labels([Path("/work/base"), Path("/tmp/base"), Path("/x/other")])
    assert list(labels) == ["this", "base", "base2", "other"]


def test_versus_pairs_every_cpu_figure_both_points_have() -> None:
    summary = summary_of(
        short={
            "this": {"facade_us": 300.0, "inference_us": 200.0, "ttft_p50_ms": 5.0},
            "base": {"facade_us": 600.0, "inference_us": 400.0, "ttft_p50_ms": 9.0},
        },
        delivery={"this": {"facade_us_per_token": 12.0}, "base": {"facade_us_per_token": 15.0}},
        burst={"this": {"facade_us": 1.0}},
    )
    assert versus(summary, "this", "base") == {
        "short": {"facade_us": 0.5, "inference_us": 0.5},
        "delivery": {"facade_us_per_token": 0.8},
    }
