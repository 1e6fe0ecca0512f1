"""benchmarks/facade_stack.py: each mode serves its requests as it claims (the figure itself
is a benchmark's, not a test's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("mode", ["--full", "--floor", "--stack"])
def test_each_mode_runs_its_requests_to_the_expected_status(mode: str) -> None:
    # The child asserts that every request got the status of its mode (400 for the stack's
    # refused body, 200 for a whole request through the stand-in backend, and the floor's).
    flags = [] if mode == "--stack" else [mode]
    command = [sys.executable, "benchmarks/facade_stack.py", "--child", "--requests", "300"]
    out = subprocess.run(
        [*command, *flags], cwd=REPO, check=True, capture_output=True, text=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1])["us"] > 0
