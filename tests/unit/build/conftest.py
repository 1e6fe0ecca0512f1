"""Fixtures for the build pipeline tests: stand-in TensorRT-LLM tools and a fake machine.

TensorRT-LLM, its example scripts and a GPU cannot run here, so the tests put tiny stand-in
executables on PATH under the real tool names (trtllm-build, the quantize/convert wrappers,
nvidia-smi). Each records its argv (and a few env vars) as one JSON line and creates the
outputs the real tool would, so the builder is exercised end to end through real subprocesses.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from enginebuild.targets import Matrix, load_matrix

_STANDIN = """#!{python}
\"\"\"Stand-in for {tool}: records argv, creates the outputs the real tool writes.\"\"\"
import json, os, sys
from pathlib import Path

TOOL = {tool!r}
args = sys.argv[1:]
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps({{"tool": TOOL, "argv": args,
                          "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE")}}) + "\\n")

def flag(name):
    return args[args.index(name) + 1] if name in args else None

if os.environ.get("STANDIN_FAIL") == TOOL:
    print(f"{{TOOL}}: simulated failure", flush=True)
    sys.exit(3)

GPU = os.environ.get("STANDIN_GPU", "NVIDIA H100 80GB HBM3, 9.0")
if TOOL == "nvidia-smi":
    print(GPU)
    sys.exit(0)

out = Path(flag("--output_dir"))
out.mkdir(parents=True, exist_ok=True)
if TOOL == "tensorchat-quantize":
    calib = Path(flag("--calib_dataset")) / "train.jsonl"
    if not calib.is_file() or os.environ.get("HF_DATASETS_OFFLINE") != "1":
        print("calibration set missing or hub access allowed", flush=True)
        sys.exit(4)
# What the tools write lives in standin_tools (the build's runner puts the repository on
# PYTHONPATH); nvidia-smi above also runs without it.
from tests.unit.build.standin_tools import trtllm_build, write_checkpoint
if TOOL == "trtllm-build":
    sys.exit(trtllm_build(args, Path(flag("--checkpoint_dir")), out, GPU))
write_checkpoint(TOOL, args, out)
print(f"{{TOOL}}: wrote {{out}}", flush=True)
"""

STANDIN_TOOLS = (
    "trtllm-build",
    "tensorchat-quantize",
    "tensorchat-convert-llama",
    "tensorchat-convert-qwen",
    "nvidia-smi",
)


class FakeMachine:
    """The stand-in tools on PATH plus a fake TensorRT-LLM install, and their call log."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.site = root / "site"
        self.log = root / "calls.jsonl"

    def calls(self, tool: str | None = None) -> list[list[str]]:
        if not self.log.exists():
            return []
        entries = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [e["argv"] for e in entries if tool is None or e["tool"] == tool]

    def entries(self, tool: str) -> list[dict[str, object]]:
        entries = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [e for e in entries if e["tool"] == tool]


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMachine:
    """An H100 box with TensorRT-LLM 1.2.1 "installed" (package metadata only)."""
    fake = FakeMachine(tmp_path / "machine")
    fake.bin.mkdir(parents=True)
    for tool in STANDIN_TOOLS:
        path = fake.bin / tool
        path.write_text(_STANDIN.format(python=sys.executable, tool=tool))
        path.chmod(0o755)
    # detect_runtime reads versions from package metadata; a dist-info dir is all it needs.
    for name, version in (("tensorrt_llm", "1.2.1"), ("tensorrt", "10.14.1.48")):
        info = fake.site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    monkeypatch.syspath_prepend(str(fake.site))
    monkeypatch.setenv("PATH", f"{fake.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_LOG", str(fake.log))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake


def _write_checkpoint(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"architectures": ["MistralForCausalLM"]}))
    (root / "model.safetensors").write_bytes(os.urandom(256))
    (root / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    (root / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    return root


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A stand-in HF checkpoint: config, weights bytes and tokenizer files (hashed, not run)."""
    return _write_checkpoint(tmp_path / "checkpoint")


@pytest.fixture
def calib_file(tmp_path: Path) -> Path:
    path = tmp_path / "calibration.jsonl"
    lines = [json.dumps({"text": f"calibration sample {i}"}) for i in range(40)]
    lines.append(json.dumps({"messages": [{"role": "user", "content": "hi"}]}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def matrix() -> Matrix:
    return load_matrix()


@pytest.fixture
def write_checkpoint() -> Callable[[Path], Path]:
    return _write_checkpoint
