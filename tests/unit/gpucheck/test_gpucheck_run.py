"""The whole GPU check on the CPU: the torch engine against itself, and the trtllm adapter over
the fake bindings (serve, compare and stream for real; the engine builds only planned)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.engines.manifest import RuntimeInfo
from tests.gpu.check.__main__ import main

pytestmark = pytest.mark.slow


def lines(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """name -> 'PASS detail' / 'FAIL detail' of every check line printed."""
    found = {}
    for line in capsys.readouterr().out.splitlines():
        status, name, *detail = line.split(" ", 2)
        if status in ("PASS", "FAIL"):
            found[name] = " ".join([status, *detail])
    return found


CHECKS = [
    "prerequisites",
    "checkpoints",
    "build:tiny/mistral",
    "build:tiny/qwen2",
    "serve",
    "parity:tiny/mistral",
    "parity:tiny/qwen2",
    "stream:facade",
]


def test_the_torch_engine_against_itself_passes_every_check(
    tiny_mistral_dir: Path, tiny_qwen2_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--engine", "torch", "--work", str(tmp_path)]) == 0
    result = lines(capsys)
    assert list(result) == CHECKS
    assert all(line.startswith("PASS") for line in result.values()), result
    assert result["parity:tiny/qwen2"] == (
        "PASS 3 prompts, 36 greedy tokens equal, max |logprob difference| 0.0000, 0 near-tie(s)"
    )
    assert (tmp_path / "tiny-targets.yaml").is_file()


def test_the_fake_trtllm_serves_and_streams_but_its_hashed_tokens_fail_parity(
    tiny_mistral_dir: Path, tiny_qwen2_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--engine", "fake", "--work", str(tmp_path)]) == 1
    result = lines(capsys)
    assert list(result) == CHECKS
    failed = {name for name, line in result.items() if line.startswith("FAIL")}
    assert failed == {"parity:tiny/mistral", "parity:tiny/qwen2"}
    assert "token 0: trtllm-fake chose" in result["parity:tiny/mistral"]
    assert "has no" in result["parity:tiny/mistral"]


def test_without_a_gpu_and_tensorrt_llm_the_real_check_stops_at_its_prerequisites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "inference.engines.manifest.detect_runtime",
        lambda: RuntimeInfo(gpu=None, tensorrt_llm_version=None, tensorrt_version=None),
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # none of the TensorRT-LLM tools
    assert main(["--work", str(tmp_path)]) == 1
    result = lines(capsys)
    assert list(result) == ["prerequisites"]
    detail = result["prerequisites"]
    assert detail.startswith("FAIL ") and "no NVIDIA GPU (nvidia-smi found none)" in detail
    assert "TensorRT-LLM is not installed; the check needs 1.2.1" in detail
    for tool in ("trtllm-build", "tensorchat-convert-llama", "tensorchat-convert-qwen"):
        assert f"{tool} is not on PATH" in detail
