"""The Dockerfiles: hadolint-clean, every COPY source in the repo and in the build context,
every ENTRYPOINT/CMD a real command, health checks on real routes, non-root users."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.unit.deploy.helpers import (
    REPO,
    copy_sources,
    dockerfile_instructions,
    dockerignore_excludes,
    dockerignore_patterns,
    exec_form,
    image_command,
    tool,
)

DOCKERFILES = sorted(
    path
    for path in REPO.glob("*/Dockerfile*")
    if not path.name.endswith(".dockerignore") and ".venv" not in path.parts
)
IDS = [str(path.relative_to(REPO)) for path in DOCKERFILES]


def test_every_image_is_found() -> None:
    assert {"facade/Dockerfile", "inference/Dockerfile", "inference/Dockerfile.cpu"} <= set(IDS)
    assert "build/Dockerfile" in IDS


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = subprocess.run(
        [tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"), "--no-color", dockerfile],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_a_finding(tmp_path: Path) -> None:
    # The check above means something only if hadolint fails on what .hadolint.yaml keeps.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install requests\n")
    result = subprocess.run(
        [tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"), "--no-color", bad],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "DL3013" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_copy_sources_exist_and_are_in_the_context(dockerfile: Path) -> None:
    patterns = dockerignore_patterns(dockerfile)
    for instruction in dockerfile_instructions(dockerfile):
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        for source in copy_sources(instruction):
            where = f"{dockerfile.name}:{instruction.line} {source}"
            assert (REPO / source).exists(), f"{where}: not in the repository"
            if patterns is not None:
                assert not dockerignore_excludes(patterns, source), f"{where}: .dockerignore"


def test_dockerignore_matching() -> None:
    patterns = ["*", "!pyproject.toml", "!facade/", "**/__pycache__"]
    assert dockerignore_excludes(patterns, "inference")
    assert not dockerignore_excludes(patterns, "facade")
    assert not dockerignore_excludes(patterns, "pyproject.toml")
    assert dockerignore_excludes(patterns, "facade/__pycache__/x.pyc")


def _console_scripts() -> dict[str, str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return dict(pyproject["project"]["scripts"])


def assert_real_command(argv: list[str]) -> None:
    """`tensorchat ...` parses with the real CLI; `python3 -m module` names a module."""
    from tensorchat.cli import build_parser

    assert argv, "no command"
    if argv[0] == "tensorchat":
        assert "tensorchat" in _console_scripts()
        build_parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown command or flag
    elif argv[0] in ("python", "python3") and argv[1] == "-m":
        assert importlib.util.find_spec(argv[2]) is not None, argv
    else:
        raise AssertionError(f"unknown command {argv}")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_entrypoint_is_a_real_command(dockerfile: Path) -> None:
    argv = image_command(dockerfile)
    if argv[-1:] == ["--help"]:
        argv = argv[:-1]  # build/Dockerfile: `--help` by default, the pipeline's own parser
    assert_real_command(argv)


def test_a_wrong_command_is_refused() -> None:
    with pytest.raises(SystemExit):
        assert_real_command(["tensorchat", "facade", "--no-such-flag"])


def _final_user(dockerfile: Path) -> str | None:
    users = [i.arguments for i in dockerfile_instructions(dockerfile) if i.keyword == "USER"]
    return users[-1] if users else None


@pytest.mark.parametrize("name", ["facade/Dockerfile", "inference/Dockerfile.cpu"])
def test_new_images_run_as_a_numeric_non_root_user(name: str) -> None:
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    user = _final_user(REPO / name)
    assert user is not None and re.fullmatch(r"[1-9]\d*(:\d+)?", user), user


def test_facade_image_holds_only_the_facade() -> None:
    dockerfile = REPO / "facade/Dockerfile"
    sources = {
        source
        for instruction in dockerfile_instructions(dockerfile)
        if instruction.keyword == "COPY"
        for source in copy_sources(instruction)
    }
    assert sources == {"pyproject.toml", "README.md", "tensorchat", "facade"}
    installs = [i.arguments for i in dockerfile_instructions(dockerfile) if i.keyword == "RUN"]
    assert any('pip install "./[facade]"' in run for run in installs)


def _healthcheck(dockerfile: Path) -> list[str]:
    (check,) = [i for i in dockerfile_instructions(dockerfile) if i.keyword == "HEALTHCHECK"]
    return exec_form(check.arguments.partition("CMD ")[2])


def test_facade_healthcheck_asks_a_real_route() -> None:
    from facade.routes.health import router

    code = _healthcheck(REPO / "facade/Dockerfile")[-1]
    (path,) = re.findall(r"http://127\.0\.0\.1:%s(/[\w/]*)", code)
    assert path in {route.path for route in router.routes}  # type: ignore[attr-defined]


def test_cpu_inference_healthcheck_asks_the_served_port() -> None:
    dockerfile = REPO / "inference/Dockerfile.cpu"
    code = _healthcheck(dockerfile)[-1]
    argv = image_command(dockerfile)
    port = argv[argv.index("--port") + 1]
    assert f"127.0.0.1:{port}" in code and "HealthStub" in code
