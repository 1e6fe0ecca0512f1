"""The `tensorchat` command starts with only some parts installed (tensorchat/cli.py)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from types import ModuleType

import pytest

from tensorchat import cli


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _without(module: str, missing: str) -> Callable[[str], ModuleType]:
    """import_module, except that importing `module` fails as if `missing` were not installed."""
    real = importlib.import_module

    def import_module(name: str, package: str | None = None) -> ModuleType:
        if name == module:
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
        return real(name, package)

    return import_module


@pytest.mark.parametrize("part", cli.PARTS, ids=[p.module for p in cli.PARTS])
def test_each_part_registers_the_commands_it_declares(part: cli.Part) -> None:
    # The table names a missing part's commands without importing it: it must match.
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    importlib.import_module(part.module).register(subparsers)
    assert set(_subcommands(parser)) == set(part.commands)


def test_a_part_without_its_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(importlib, "import_module", _without("inference.cli", "torch"))
    parser = cli.build_parser()
    assert "pip install 'tensorchat[inference]'" in " ".join(parser.format_help().split())
    subcommands = _subcommands(parser)
    assert {"facade", "keys", "engines", "bench", "serve"} <= set(subcommands)  # the others load

    for argv in (["inference"], ["inference", "--help"], ["inference", "--port", "1"]):
        assert cli.main(argv) == 2
        error = capsys.readouterr().err
        assert "'inference' part is not installed" in error and "'torch'" in error
        assert "pip install 'tensorchat[inference]'" in error


def test_a_missing_first_party_package_is_a_missing_part(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The facade image holds tensorchat/ and facade/ only: enginebuild is not there at all.
    monkeypatch.setattr(importlib, "import_module", _without("enginebuild.cli", "enginebuild"))
    assert cli.main(["engines", "matrix"]) == 2
    assert "pip install 'tensorchat[build]'" in capsys.readouterr().err


def test_a_missing_first_party_module_is_a_bug_and_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib, "import_module", _without("facade.cli", "facade.nosuchmodule"))
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()


def test_a_dependency_missing_when_the_command_runs_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `tensorchat inference` parses with pydantic and yaml alone; torch is imported when it runs.
    def run(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'grpc_health'", name="grpc_health")

    parser = cli.build_parser()
    subcommands = _subcommands(parser)
    subcommands["inference"].set_defaults(handler=run)
    monkeypatch.setattr(cli, "build_parser", lambda command=None: parser)
    assert cli.main(["inference"]) == 2
    error = capsys.readouterr().err
    assert "'grpc_health'" in error and "pip install 'tensorchat[inference]'" in error


def test_a_bug_when_the_command_runs_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'facade.gone'", name="facade.gone")

    parser = cli.build_parser()
    _subcommands(parser)["facade"].set_defaults(handler=run)
    monkeypatch.setattr(cli, "build_parser", lambda command=None: parser)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["facade"])


def test_running_a_command_imports_only_its_part(monkeypatch: pytest.MonkeyPatch) -> None:
    # A facade process must load no inference code, not even the inference command's flags.
    imported: list[str] = []
    real = importlib.import_module

    def import_module(name: str, package: str | None = None) -> ModuleType:
        imported.append(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", import_module)
    parser = cli.build_parser("facade")
    assert [name for name in imported if name in {p.module for p in cli.PARTS}] == ["facade.cli"]
    assert {"serve", "inference", "engines", "bench"} <= set(_subcommands(parser))  # listed
    assert parser.parse_args(["facade", "--port", "1"]).port == 1
