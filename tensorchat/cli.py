"""The `tensorchat` command: one subcommand per part of the stack."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tensorchat.logs import LOG_FORMATS

# Modules exposing `register(subparsers)`; each imports its heavy dependencies only when run,
# so `tensorchat --help` stays fast.
COMMAND_MODULES = (
    "tensorchat.serve",
    "inference.cli",
    "facade.cli",
    "enginebuild.cli",
    "tensorchat.bench.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tensorchat",
        description="Self-hosted OpenAI-compatible chat completions over a gRPC inference service.",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default info)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="text lines, or one JSON object per line for log collectors (default text)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
