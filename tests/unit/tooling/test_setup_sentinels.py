"""`make serve` / `make test` after `scripts/setup` was run by hand: no second set-up.

The real Makefile and scripts/setup run in a copy of the repository whose Python is a stub
that accepts every command, so nothing is installed; `make -n` shows what make would run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
STUB_PYTHON = '#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls.log"\nexit 0\n'


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "pyproject.toml", "scripts/setup"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(STUB_PYTHON)
    python.chmod(0o755)
    return tmp_path


def _setup(checkout: Path, *args: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(checkout / ".venv" / "bin" / "python")}
    subprocess.run(["scripts/setup", *args], cwd=checkout, env=env, check=True)


def _would_run(checkout: Path, target: str) -> str:
    dry = subprocess.run(
        ["make", "-n", target], cwd=checkout, capture_output=True, text=True, check=True
    )
    return dry.stdout


def test_make_serve_does_not_set_up_again_after_scripts_setup(checkout: Path) -> None:
    assert "scripts/setup" in _would_run(checkout, "serve")  # never set up: it would
    _setup(checkout)
    assert "pip install" in (checkout / ".venv" / "bin" / "calls.log").read_text()
    assert "scripts/setup" not in _would_run(checkout, "serve")
    # The dev set-up is a separate, larger one.
    assert "scripts/setup --dev" in _would_run(checkout, "test")


def test_make_test_does_not_set_up_again_after_scripts_setup_dev(checkout: Path) -> None:
    _setup(checkout, "--dev")
    assert "scripts/setup" not in _would_run(checkout, "test")
    assert "scripts/setup" not in _would_run(checkout, "serve")
