"""A real engine build on a real GPU (builder image only; skipped everywhere else).

It runs `engines build --gpu auto` with the real trtllm-build and converter on the tiny
Mistral-shaped checkpoint, with small BF16 limits for this machine's GPU, so the whole
pipeline (convert, compile, manifest, verify with load + smoke + torch parity, install) runs
in minutes instead of the hours a 7B build takes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from enginebuild.__main__ import main
from enginebuild.targets import DEFAULT_TARGETS_FILE
from inference.engines.manifest import (
    PINNED_TENSORRT_LLM_VERSION,
    check_engine,
    detect_runtime,
    gpu_key_for,
    read_manifest,
)

pytestmark = pytest.mark.gpu
MISTRAL = "mistralai/Mistral-7B-Instruct-v0.3"


@pytest.fixture
def gpu_key() -> str:
    runtime = detect_runtime()
    tools = ("trtllm-build", "tensorchat-convert-llama")
    if runtime.gpu is None or runtime.tensorrt_llm_version != PINNED_TENSORRT_LLM_VERSION:
        pytest.skip("needs an NVIDIA GPU and TensorRT-LLM 1.2.1 (run in build/Dockerfile)")
    if not all(shutil.which(t) for t in tools):
        pytest.skip(f"needs {', '.join(tools)} on PATH (the builder image provides them)")
    key = gpu_key_for(runtime.gpu.name)
    if key is None:
        pytest.skip(f"{runtime.gpu.name} is not a build target")
    return key


def tiny_targets(path: Path, gpu_key: str) -> Path:
    """The real matrix, with the tiny model's shape and a small BF16 recipe for this GPU."""
    raw = yaml.safe_load(DEFAULT_TARGETS_FILE.read_text())
    raw["models"] = {
        MISTRAL: {
            "converter": "llama", "num_layers": 2, "num_kv_heads": 2, "head_dim": 16,
            "hidden_size": 64, "vocab_size": 32768, "max_position_embeddings": 32768,
            "params": 4_300_000, "unquantized_params": 4_194_304,
        }
    }  # fmt: skip
    raw["targets"] = [
        {
            "gpu": gpu_key,
            "models": [MISTRAL],
            "weights": "bf16",
            "kv_cache": "bf16",
            "limits": {
                "max_batch_size": 8,
                "max_input_len": 1024,
                "max_seq_len": 2048,
                "max_num_tokens": 2048,
            },
            "flags": ["common", "ampere"],  # BF16 flags: gemm plugin on, no FP8 FMHA
        }
    ]
    raw.pop("_both", None)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_real_bf16_build_verifies_and_installs(
    gpu_key: str, tiny_mistral_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    targets = tiny_targets(tmp_path / "targets.yaml", gpu_key)
    out = tmp_path / "engines"
    argv = ["build", "--model", MISTRAL, "--gpu", "auto", "--checkpoint", str(tiny_mistral_dir),
            "--out", str(out), "--targets", str(targets)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr()
    log = capsys.readouterr().out
    assert "[ok] smoke prompt" in log and "[ok] greedy parity with torch" in log
    engine = out / "mistralai--mistral-7b-instruct-v0.3" / gpu_key
    manifest = read_manifest(engine)
    assert manifest.tensorrt_llm_version == PINNED_TENSORRT_LLM_VERSION
    assert check_engine(engine, model_id=MISTRAL, runtime=detect_runtime()) == manifest
