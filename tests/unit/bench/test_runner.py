"""Load shapes, closed and open loops, worker processes and the CLI end to end."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from pathlib import Path

import pytest

from tensorchat.bench.cli import main
from tensorchat.bench.fake_server import FakeOpenAIServer
from tensorchat.bench.runner import LoadShape, issue, run_load
from tensorchat.bench.stats import RequestResult
from tensorchat.bench.target import Target
from tensorchat.bench.workload import LengthDist, RequestSpec, synthetic_requests
from tests.support.virtual_time import virtual_time


def specs(count: int, tokens: int = 8) -> list[RequestSpec]:
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


class TimedSender:
    """Answers each request after `service_s` on the loop's (virtual) clock; keeps what it sent."""

    def __init__(self, service_s: float) -> None:
        self.service_s = service_s
        self.sent: list[RequestSpec] = []

    async def send(self, spec: RequestSpec) -> RequestResult:
        loop = asyncio.get_running_loop()
        self.sent.append(spec)
        start = loop.time()
        await asyncio.sleep(self.service_s)
        return RequestResult(start=start, end=loop.time(), ok=True)


async def issue_on_loop_clock(
    sender: TimedSender, requests: list[RequestSpec], shape: LoadShape, seed: int = 0
) -> list[RequestResult]:
    clock = asyncio.get_running_loop().time
    return await issue(sender.send, requests, shape, seed=seed, clock=clock)


@virtual_time
async def test_ramp_up_spreads_the_first_requests() -> None:
    # Each request takes 0.5 s, so each of the 4 users sends one.
    results = await issue_on_loop_clock(
        TimedSender(0.5), specs(4), LoadShape(concurrency=4, ramp_up_s=0.3)
    )
    # Users 0..3 start at 0, 75, 150 and 225 ms; without the ramp all four start at once.
    assert sorted(r.start for r in results) == pytest.approx([0.0, 0.075, 0.15, 0.225])


@virtual_time
async def test_poisson_arrivals_follow_the_rate() -> None:
    seed, rate = 3, 200.0
    shape = LoadShape(concurrency=None, request_rate=rate)
    results = await issue_on_loop_clock(TimedSender(0.01), specs(60, 2), shape, seed)
    starts = sorted(r.start for r in results)
    # Each request goes out an exponential gap (the seeded generator's) after the previous.
    rng = random.Random(seed)
    expected = list(itertools.accumulate((rng.expovariate(rate) for _ in range(59)), initial=0.0))
    assert starts == pytest.approx(expected)
    # 59 gaps of mean 1 / rate = 5 ms: a span near 0.3 s, not 59 / 200 ms or 59 * 200 s.
    assert 0.12 < starts[-1] < 0.7


@virtual_time
async def test_duration_cycles_the_workload_and_stops_issuing() -> None:
    sender, workload = TimedSender(0.125), specs(3)
    results = await issue_on_loop_clock(sender, workload, LoadShape(concurrency=2, duration_s=0.3))
    # Two users send at 0, 0.125 and 0.25 s; at 0.375 s the 0.3 s are over.
    assert sorted(r.start for r in results) == [0.0, 0.0, 0.125, 0.125, 0.25, 0.25]
    assert sender.sent == [workload[k % 3] for k in range(6)]


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
