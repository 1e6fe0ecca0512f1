"""`scripts/gpu-check` = `python -m tests.gpu.check`: see docs/gpu.md, "GPU check"."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from tests.gpu.check.report import Report
from tests.gpu.check.run import CANDIDATE_ENGINES, TOTAL_BUDGET_S, CheckOptions, run_check


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/gpu-check",
        description=(
            "On one H100 or H200 with TensorRT-LLM 1.2.1 (the builder image with tensorchat's "
            "dev extras): build the tiny Mistral and Qwen2 test checkpoints into engines with "
            "`enginebuild build`, serve them with the inference service next to the torch engine "
            "on the same checkpoints, compare greedy tokens and logprobs (within 1e-2), and "
            "stream one chat completion through the facade. Prints `PASS|FAIL <check> <detail>` "
            f"per check and exits 1 if any failed; every step has a timeout, {TOTAL_BUDGET_S}s "
            "in all."
        ),
    )
    parser.add_argument(
        "--engine",
        choices=CANDIDATE_ENGINES,
        default="trtllm",
        help="what serves the candidate: trtllm (default; builds real engines, needs the GPU), "
        "fake (no GPU: plans the builds and serves the trtllm adapter over the fake bindings "
        "of tests/fakes, whose tokens are a hash, so the parity lines FAIL by design), torch "
        "(no GPU: the torch engine against itself, a self-test of the check; all lines PASS)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="directory for the tiny build matrix, engines and build logs (kept); default: a "
        "temporary directory, removed when every check passed",
    )
    parser.add_argument(
        "--targets",
        type=Path,
        default=None,
        help="the build matrix whose BF16 recipe the tiny engines use (default "
        "$TENSORCHAT_TARGETS, else build/targets.yaml)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="tensorchat-gpu-check-"))
    status = run_check(CheckOptions(engine=args.engine, work=work, targets=args.targets), Report())
    if args.work is None and status == 0:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
