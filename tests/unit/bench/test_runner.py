"""Load shapes, closed and open loops, worker processes and the CLI end to end."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from tensorchat.bench.cli import main
from tensorchat.bench.fake_server import FakeOpenAIServer
from tensorchat.bench.runner import LoadShape, run_load
from tensorchat.bench.target import Target
from tensorchat.bench.workload import LengthDist, synthetic_requests


def specs(count: int, tokens: int = 8) -> list:  # type: ignore[type-arg]
    return synthetic_requests(count, LengthDist.parse("5"), LengthDist.parse(str(tokens)))


def test_split_shares_concurrency_and_rate() -> None:
    shares = LoadShape(concurrency=7, duration_s=3).split(3)
    assert [s.concurrency for s in shares] == [3, 2, 2]
    assert all(s.duration_s == 3 for s in shares)
    rates = LoadShape(concurrency=None, request_rate=9.0).split(3)
    assert [s.request_rate for s in rates] == [3.0, 3.0, 3.0]
    with pytest.raises(ValueError):
        LoadShape(concurrency=0)
    with pytest.raises(ValueError):
        LoadShape(concurrency=None, request_rate=0)
    assert all(s.ramp_up_s == 2.0 for s in LoadShape(concurrency=4, ramp_up_s=2.0).split(2))
    with pytest.raises(ValueError):
        LoadShape(concurrency=4, ramp_up_s=-1.0)
    with pytest.raises(ValueError, match="closed loop"):
        LoadShape(concurrency=4, request_rate=5.0, ramp_up_s=1.0)


def test_closed_loop_keeps_the_concurrency(threaded_server: FakeOpenAIServer) -> None:
    threaded_server.tokens_per_second = 500  # 20 tokens: ~40 ms per request
    target = Target(kind="http", address=threaded_server.url, model="m")
    outcome = run_load(target, specs(12, 20), LoadShape(concurrency=4))
    assert len(outcome.results) == 12 and all(r.ok for r in outcome.results)
    # At most 4 requests overlap at any moment, and 4 do overlap.
    results = outcome.results
    events = sorted([(r.start, 1) for r in results] + [(r.end, -1) for r in results])
    depth = peak = 0
    for _, step in events:
        depth += step
        peak = max(peak, depth)
    assert peak == 4


def test_ramp_up_spreads_the_first_requests(threaded_server: FakeOpenAIServer) -> None:
    threaded_server.tokens_per_second = 20  # 10 tokens: ~0.5 s, so each user sends one
    target = Target(kind="http", address=threaded_server.url, model="m")
    outcome = run_load(target, specs(4, 10), LoadShape(concurrency=4, ramp_up_s=0.3))
    starts = sorted(r.start for r in outcome.results)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Users 0..3 start at 0, 75, 150 and 225 ms; without the ramp all four start at once.
    assert all(0.05 < gap < 0.2 for gap in gaps), gaps
    assert all(r.ok for r in outcome.results)


def test_poisson_arrivals_follow_the_rate(threaded_server: FakeOpenAIServer) -> None:
    target = Target(kind="http", address=threaded_server.url, model="m")
    outcome = run_load(target, specs(60, 2), LoadShape(concurrency=None, request_rate=200.0))
    starts = sorted(r.start for r in outcome.results)
    span = starts[-1] - starts[0]
    # 59 exponential gaps of mean 5 ms: the span is within a generous band around 0.3 s.
    assert 0.12 < span < 0.7
    assert all(r.ok for r in outcome.results)


def test_duration_cycles_the_workload_and_stops_issuing(threaded_server: FakeOpenAIServer) -> None:
    threaded_server.tokens_per_second = 1000
    target = Target(kind="http", address=threaded_server.url, model="m")
    t0 = time.monotonic()
    outcome = run_load(target, specs(3, 10), LoadShape(concurrency=2, duration_s=0.3))
    assert len(outcome.results) > 3
    assert max(r.start for r in outcome.results) < t0 + 0.3 + 0.1


def test_worker_processes_share_the_load_and_report_cpu(threaded_server: FakeOpenAIServer) -> None:
    target = Target(kind="http", address=threaded_server.url, model="m")
    ticks: list[bool] = []
    shape = LoadShape(concurrency=4)
    outcome = run_load(target, specs(10), shape, workers=2, progress=ticks.append)
    assert len(outcome.results) == 10 and all(r.ok for r in outcome.results)
    assert len(outcome.workers) == 2 and all(w.cpu_s > 0 for w in outcome.workers)
    assert sorted(len(w.results) for w in outcome.workers) == [5, 5]
    assert ticks == [True] * 10


def test_cli_runs_levels_and_writes_json_and_plot(
    threaded_server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    code = main(
        [
            "--url", threaded_server.url, "--model", "m", "--concurrency", "1,4",
            "--num-requests", "8", "--output-tokens", "uniform:4:12", "--workers", "1",
            "--warmup", "2", "--json", str(out), "--plot", str(png), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "== concurrency=1 ==" in printed and "== concurrency=4 ==" in printed
    doc = json.loads(out.read_text())
    assert [run["concurrency"] for run in doc["runs"]] == [1, 4]
    summary = doc["runs"][1]["summary"]
    assert summary["completed"] == 8 and summary["errors"] == {}
    assert summary["ttft_ms"]["p50"] > 0 and summary["output_throughput"] > 0
    assert doc["config"]["output_tokens"] == "uniform:4:12"
    assert doc["machine"]["cpus"] >= 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 2 warm-up requests per level plus 8 measured.
    assert threaded_server.requests == 20


def test_cli_refuses_a_ramp_up_with_poisson_arrivals() -> None:
    args = ["--url", "http://127.0.0.1:9/v1", "--model", "m", "--no-progress"]
    with pytest.raises(SystemExit, match="ramp-up is for a closed loop"):
        main([*args, "--request-rate", "5", "--ramp-up", "1"])


def test_cli_reports_errors_by_kind(
    threaded_server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = threaded_server.url
    code = main(["--url", url, "--model", "missing", "--num-requests", "3", "--no-progress"])
    assert code == 1
    assert "http_404: 3" in capsys.readouterr().out
