"""benchmarks/stack.py end to end on a small load: real inference service and facade processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_stack_benchmark_runs_every_point(tmp_path: Path) -> None:
    out = tmp_path / "stack.json"
    args = [
        sys.executable, str(REPO / "benchmarks" / "stack.py"), "--streams", "4",
        "--duration", "4", "--warmup", "1", "--output-tokens", "120", "--json", str(out),
    ]  # fmt: skip
    run = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    doc = json.loads(out.read_text())
    (level,) = doc["levels"]
    assert set(level["points"]) == {"engine", "fake", "grpc", "rest"}
    for name, point in level["points"].items():
        assert point["errors"] == {}, name
        # 4 streams are far below any limit: everything emitted arrives.
        assert point["delivered_over_offered"] > 0.9, name
        if name != "fake":  # the fake server has no engine counter
            assert point["delivered_over_emitted"] > 0.9, name
        assert point["ttft_ms"]["count"] > 0 and point["itl_ms"]["p50"] > 0, name
    assert set(level["points"]["rest"]["cpu_cores"]) == {"inference", "facade"}
    assert {"grpc_over_engine", "rest_over_grpc"} <= set(level["added"])
