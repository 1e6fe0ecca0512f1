"""`python -m enginebuild SUBCOMMAND`: the `tensorchat engines` commands without the full CLI.

The builder image, the k8s Jobs and CI call this so they depend on nothing but this package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from enginebuild.cli import add_engine_commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m enginebuild",
        description="Plan, build, verify and list TensorRT-LLM engines (= tensorchat engines).",
    )
    add_engine_commands(
        parser.add_subparsers(dest="engines_command", metavar="SUBCOMMAND", required=True)
    )
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
