"""benchmarks/request_cpu.py end to end on a tiny plan: floor, inference and facade processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# Every phase, one round, loads far below any limit: a run of about 30 s.
TINY = [
    "--rounds", "1", "--requests", "64", "--concurrency", "8", "--streams", "8",
    "--stream-tokens", "20", "--burst-streams", "16", "--burst-tokens", "5",
    "--delivery-streams", "8", "--delivery-tokens", "24", "--delivery-duration", "3",
    "--delivery-warmup", "1", "--lowload-streams", "2", "--lowload-requests", "1",
    "--idle-s", "0.5",
]  # fmt: skip


@pytest.mark.slow
def test_request_cpu_benchmark_runs_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "request-cpu.json"
    args = [sys.executable, str(REPO / "benchmarks" / "request_cpu.py"), *TINY, "--json", str(out)]
    run = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    doc = json.loads(out.read_text())
    summary = doc["summary"]
    assert set(summary) == {"short", "streams", "burst", "delivery", "lowload"}
    assert set(summary["short"]) == {"floor", "this", "this/grpc"}
    for phase, points in summary.items():
        for point, figures in points.items():
            assert figures["errors"] == 0, (phase, point)
    assert summary["short"]["this"]["facade_us"] > 0 and summary["short"]["floor"]["floor_us"] > 0
    assert summary["streams"]["floor"]["events_per_stream"] == 20  # one event per token
    assert summary["delivery"]["this"]["delivered_over_offered"] > 0.8
    assert {g["goal"] for g in doc["goals"]} == {1, 3, 4}  # goal 2 needs a --tree
    assert {"cpu_model", "cpus", "python", "load_average_before"} <= set(doc["machine"])
