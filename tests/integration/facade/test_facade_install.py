"""A facade replica with only `tensorchat[facade]` installed: it starts, serves a chat against a
running inference service, and never loads torch, transformers or tokenizers.

The facade runs as `tensorchat facade` does (tensorchat.cli.main), wrapped so that the process
writes sorted(sys.modules) when SIGTERM stops it. Two installs: this test run's own (which
has torch, so its absence from sys.modules means the facade never imported it), and a fresh
virtualenv holding what facade/Dockerfile installs: pyproject.toml, README.md, tensorchat/ and
facade/ only, `pip install '.[facade]'` from PyPI (pip's wheel cache makes reruns quick).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.facade.conftest import SYNTHETIC
from tests.support.facade_process import facade_process
from tests.support.servers import InferenceServerThread

REPO = Path(__file__).resolve().parents[3]
HEAVY = {"torch", "transformers", "tokenizers"}
# What facade/Dockerfile copies into its image.
FACADE_IMAGE_SOURCES = ("pyproject.toml", "README.md", "tensorchat", "facade")

# uvicorn re-raises the SIGTERM it caught once it has shut down, with the handler it found in
# place: this one, so the process writes its modules and exits 0 (atexit would not run).
WRAPPER = """
import json, signal, sys
from tensorchat.cli import main
modules_file = sys.argv.pop(1)
def write_modules_and_exit(signum, frame):
    with open(modules_file, "w") as out:
        json.dump(sorted(sys.modules), out)
    sys.exit(0)
signal.signal(signal.SIGTERM, write_modules_and_exit)
main(sys.argv[1:])
"""


def clean_env() -> dict[str, str]:
    """This environment without Python's settings (PYTHONPATH would leak the repository in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL"))}


@pytest.fixture(scope="module")
def facade_only_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv's python with `tensorchat[facade]` installed from the image's files."""
    root = tmp_path_factory.mktemp("facade-install")
    source = root / "src"
    source.mkdir()
    for name in FACADE_IMAGE_SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run(
        [*install, f"{source}[facade]"], env=clean_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def serves_model(url: str) -> bool:
    try:
        return SYNTHETIC in httpx.get(f"{url}/v1/models", timeout=2).text
    except httpx.HTTPError:
        return False


def facade_modules(
    python: Path, env: dict[str, str], backend: str, directory: Path
) -> tuple[dict[str, Any], list[str]]:
    """Runs `tensorchat facade` with `python`, completes one chat; its reply and sys.modules."""
    wrapper, modules_file = directory / "facade_wrapper.py", directory / "modules.json"
    wrapper.write_text(WRAPPER)
    command = [str(python), str(wrapper), str(modules_file)]
    args = ["--backends", backend, "--no-auth"]
    with facade_process(command, args, directory, env, serves_model) as facade:
        body = {"model": SYNTHETIC, "messages": [{"role": "user", "content": "hi"}]}
        response = httpx.post(f"{facade.url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
    assert facade.process.returncode == 0, facade.log.read_text()[-3000:]
    return response.json(), json.loads(modules_file.read_text())


def assert_light(modules: list[str]) -> None:
    assert "facade.app" in modules and "tensorchat.v1.inference_pb2_grpc" in modules
    top_level = {name.partition(".")[0] for name in modules}
    assert not top_level & HEAVY, sorted(top_level & HEAVY)
    assert not top_level & {"inference", "enginebuild"}


def test_the_facade_never_imports_torch_even_where_it_is_installed(
    synthetic_inference: InferenceServerThread, tmp_path: Path
) -> None:
    pytest.importorskip("torch")  # this install has it: its absence below means something
    env = {**os.environ, "TENSORCHAT_API_KEYS": ""}
    backend = synthetic_inference.address
    reply, modules = facade_modules(Path(sys.executable), env, backend, tmp_path)
    assert reply["choices"][0]["message"]["content"]
    assert_light(modules)


@pytest.mark.slow
def test_a_facade_only_install_serves_a_chat(
    facade_only_python: Path, synthetic_inference: InferenceServerThread, tmp_path: Path
) -> None:
    env = clean_env()
    installed = subprocess.run(
        [str(facade_only_python), "-m", "pip", "list", "--format=freeze"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.lower()  # fmt: skip
    assert "fastapi==" in installed and not any(f"{name}==" in installed for name in HEAVY)
    reply, modules = facade_modules(facade_only_python, env, synthetic_inference.address, tmp_path)
    assert reply["choices"][0]["message"]["content"]
    assert_light(modules)


@pytest.mark.slow
def test_a_facade_only_install_names_the_extra_of_a_missing_part(facade_only_python: Path) -> None:
    tensorchat = str(facade_only_python.parent / "tensorchat")
    listed = subprocess.run([tensorchat, "--help"], env=clean_env(), capture_output=True, text=True)
    assert listed.returncode == 0 and "inference" in listed.stdout
    for command, extra in (("inference", "inference"), ("engines", "build"), ("bench", "bench")):
        done = subprocess.run(
            [tensorchat, command, "--help"], env=clean_env(), capture_output=True, text=True
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"pip install 'tensorchat[{extra}]'" in done.stderr
        assert "Traceback" not in done.stderr
