"""The `tensorchat` command: one subcommand per part of the stack.

Each part is a pip extra (pyproject.toml): a facade pod installs `tensorchat[facade]`, an
inference pod `tensorchat[inference]`. The command starts with whatever is installed: a part
whose module cannot be imported still shows in `--help`, and running it says which extra to
install instead of printing an ImportError traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tensorchat.logs import LOG_FORMATS

# The top-level packages of this distribution. A missing module below one of them that exists
# is a bug in tensorchat, not a missing part, and must surface as the error it is.
FIRST_PARTY = frozenset({"tensorchat", "inference", "facade", "enginebuild"})


@dataclass(frozen=True)
class Part:
    """A module exposing `register(subparsers)`, the subcommands it adds and their extra."""

    module: str
    commands: tuple[str, ...]
    extra: str
    summary: str

    @property
    def install_hint(self) -> str:
        return f"pip install 'tensorchat[{self.extra}]'"


# Each module imports its heavy dependencies only when run, so `tensorchat --help` stays fast.
PARTS = (
    Part(
        "tensorchat.serve",
        ("serve",),
        "facade,inference",
        "run the inference service and the OpenAI facade together (development)",
    ),
    Part("inference.cli", ("inference",), "inference", "run the gRPC inference service"),
    Part(
        "facade.cli",
        ("facade", "keys"),
        "facade",
        "run the OpenAI-compatible REST facade; manage its API keys",
    ),
    Part("enginebuild.cli", ("engines",), "build", "plan, build and verify TensorRT-LLM engines"),
    Part("tensorchat.bench.cli", ("bench",), "bench", "load-test a facade or inference service"),
)


def is_missing_part(error: ModuleNotFoundError) -> bool:
    """True when `error` means a part is not installed: a third-party module (an extra's
    dependency) or a whole first-party package (an image that holds only some of them)."""
    name = error.name or ""
    top = name.partition(".")[0]
    return top not in FIRST_PARTY or name == top


def missing_part_message(part: Part, command: str, error: ModuleNotFoundError) -> str:
    return (
        f"tensorchat {command}: the {part.extra!r} part is not installed "
        f"(no module named {error.name!r}); install it with: {part.install_hint}"
    )


def _register_missing(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    part: Part,
    error: ModuleNotFoundError,
) -> None:
    """Subcommands that only say what to install, whatever arguments they are given."""
    for command in part.commands:
        parser = subparsers.add_parser(
            command,
            help=f"{part.summary} (not installed: {part.install_hint})",
            add_help=False,
        )
        # Whatever follows (even --help) is left unparsed: main() lets it through.
        parser.set_defaults(handler=_refuse(part, command, error), missing_part=True)


def _refuse(
    part: Part, command: str, error: ModuleNotFoundError
) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        print(missing_part_message(part, command, error), file=sys.stderr)
        return 2

    return handler


def _register_listed(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], part: Part
) -> None:
    """The part's commands in `tensorchat --help` without importing it (another command runs)."""
    for command in part.commands:
        subparsers.add_parser(command, help=part.summary, add_help=False)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every part's real parser; with `command`, only its part's (so that a facade process
    imports no inference code) and the others listed by name."""
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
    for part in PARTS:
        if command is not None and command not in part.commands:
            _register_listed(subparsers, part)
            continue
        try:
            module = importlib.import_module(part.module)
        except ModuleNotFoundError as error:
            if not is_missing_part(error):
                raise
            _register_missing(subparsers, part, error)
        else:
            module.register(subparsers)
    return parser


def _part_of(command: str) -> Part:
    return next(part for part in PARTS if command in part.commands)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The first word naming a command picks it: the only global option takes a level name.
    command = next((word for word in argv if any(word in p.commands for p in PARTS)), None)
    parser = build_parser(command)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "missing_part", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")  # as parse_args does
    try:
        return int(args.handler(args) or 0)
    except ModuleNotFoundError as error:
        # A part whose command line loads without its heavy dependencies (the inference
        # flags need only pydantic and yaml) fails here, when it runs.
        if not is_missing_part(error):
            raise
        print(missing_part_message(_part_of(args.command), args.command, error), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
