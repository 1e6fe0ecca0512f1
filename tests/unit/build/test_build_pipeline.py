"""`engines build / verify / list` run for real, through stand-in TensorRT-LLM tools on PATH."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from enginebuild.__main__ import main
from enginebuild.plan import BuildPaths, make_plan
from enginebuild.targets import Matrix
from inference.engines.manifest import (
    EngineMismatchError,
    GpuInfo,
    Limits,
    Precision,
    RuntimeInfo,
    check_engine,
    checkpoint_sha256,
    detect_runtime,
    read_manifest,
    tokenizer_sha256,
)

MISTRAL = "mistralai/Mistral-7B-Instruct-v0.3"
QWEN = "Qwen/Qwen2.5-Coder-7B-Instruct"
MISTRAL_SLUG = "mistralai--mistral-7b-instruct-v0.3"


def build(checkpoint: Path, out: Path, *extra: str, model: str = MISTRAL, gpu: str = "h100") -> int:
    return main(
        ["build", "--model", model, "--gpu", gpu, "--checkpoint", str(checkpoint),
         "--out", str(out), *extra]
    )  # fmt: skip


def test_build_runs_every_step_and_writes_the_manifest(
    machine, checkpoint: Path, calib_file: Path, tmp_path: Path, matrix: Matrix,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "engines"
    assert build(checkpoint, out, "--calib-data", str(calib_file)) == 0
    engine = out / MISTRAL_SLUG / "h100"

    # The tools got exactly the planned commands, calibration stayed offline.
    target = matrix.target(MISTRAL, "h100")
    paths = BuildPaths.for_target(
        target, checkpoint=checkpoint, out_root=out, calib_data=calib_file
    )
    planned = {
        s.name: list(s.argv) for s in make_plan(target, paths, python=sys.executable) if s.argv
    }
    assert machine.calls("tensorchat-quantize") == [planned["quantize"][1:]]
    assert machine.calls("trtllm-build") == [planned["trtllm-build"][1:]]
    assert machine.entries("tensorchat-quantize")[0]["hf_hub_offline"] == "1"
    assert machine.calls("tensorchat-convert-llama") == []

    manifest = read_manifest(engine)
    assert manifest.model_id == MISTRAL
    assert (manifest.gpu_key, manifest.gpu_name, manifest.compute_capability) == (
        "h100", "NVIDIA H100 80GB HBM3", "9.0",
    )  # fmt: skip
    assert (manifest.tensorrt_llm_version, manifest.tensorrt_version) == ("1.2.1", "10.14.1.48")
    assert manifest.precision == Precision("fp8", "fp8")
    assert manifest.limits == Limits(256, 31744, 32768, 8192)
    assert manifest.checkpoint_sha256 == checkpoint_sha256(checkpoint)
    assert manifest.tokenizer_sha256 == tokenizer_sha256(checkpoint)
    assert manifest.build_flags["--multiple_profiles"] == "enable"
    assert manifest.build_flags["--max_input_len"] == "31744"
    assert "--output_dir" not in manifest.build_flags
    assert not manifest.cross_plan
    # What the runtime adapter will do with it on this (fake) H100:
    assert check_engine(engine, model_id=MISTRAL, runtime=detect_runtime()) == manifest

    log = capsys.readouterr().out
    assert "[1/6] calibration-data:" in log and "[6/6] install done" in log
    assert "    | [TRT-LLM] [I] Engine built stand-in" in log  # child output is streamed
    assert "wrote 41 calibration samples" in log
    # The verify step runs in a subprocess that has no TensorRT-LLM: static checks only.
    assert "static checks passed; no TensorRT-LLM here" in log
    assert sorted(p.name for p in (out / MISTRAL_SLUG).iterdir()) == ["h100"]
    assert not (out / ".work" / MISTRAL_SLUG / "h100").exists()


def test_absent_gpu_is_refused_unless_cross_plan(
    machine, checkpoint: Path, calib_file: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("STANDIN_GPU", "NVIDIA L4, 8.9")
    out = tmp_path / "engines"
    assert build(checkpoint, out, "--calib-data", str(calib_file)) == 1
    assert (
        "error: the target GPU h100 (NVIDIA H100 80GB HBM3) is not present: this machine has "
        "NVIDIA L4 (compute capability 8.9)"
    ) in capsys.readouterr().err
    assert machine.calls("trtllm-build") == []

    assert build(checkpoint, out, "--calib-data", str(calib_file), "--cross-plan") == 0
    engine = out / MISTRAL_SLUG / "h100"
    manifest = read_manifest(engine)
    assert manifest.cross_plan
    assert (manifest.gpu_name, manifest.compute_capability) == ("NVIDIA H100 80GB HBM3", "9.0")
    h100 = RuntimeInfo(GpuInfo("NVIDIA H100 80GB HBM3", "9.0"), "1.2.1", "10.14.1.48")
    with pytest.raises(EngineMismatchError, match="cross-plan build"):
        check_engine(engine, model_id=MISTRAL, runtime=h100)
    # verify (here: L4 and TensorRT-LLM present) does not try to load it.
    capsys.readouterr()
    assert main(["verify", str(engine)]) == 0
    assert "this is a cross-plan engine" in capsys.readouterr().out


def _matrix_file(tmp_path: Path, gpu: str, **changes: object) -> Path:
    """build/targets.yaml with the target entry of `gpu` changed."""
    import yaml

    from enginebuild.targets import targets_file

    raw = yaml.safe_load(targets_file().read_text())
    for entry in raw["targets"]:
        if entry["gpu"] == gpu:
            entry.update(changes)
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_recipe_that_trtllm_build_would_change_is_refused_before_any_step(
    machine, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 13 follow-up: no GPU hour is spent on a build 1.2.1 would refuse or change."""
    # An INT8 KV cache with paged context FMHA: trtllm-build 1.2.1 drops the FMHA silently.
    targets = _matrix_file(tmp_path, "a100-40gb", kv_cache="int8")
    code = build(checkpoint, tmp_path / "engines", "--targets", str(targets), "--cross-plan",
                 gpu="a100-40gb")  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert f"error: {MISTRAL} on a100-40gb: the recipe cannot be built as written" in err
    assert (
        'trtllm-build 1.2.1 builds --use_paged_context_fmha disable, not enable: "Paged Context '
        "FMHA is disabled because it doesn't work with int8 kv cache currently.\" [builder.py "
        "build(); rule int8-kv-disables-paged-context-fmha in trtllm_1_2_1_rules.yaml]"
    ) in err
    for tool in ("tensorchat-quantize", "tensorchat-convert-llama", "trtllm-build"):
        assert machine.calls(tool) == []


def test_our_own_hard_rules_refuse_too_and_name_their_source(
    machine, checkpoint: Path, calib_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    targets = _matrix_file(tmp_path, "h100", limits={
        "max_batch_size": 256, "max_input_len": 32768, "max_seq_len": 32768,
        "max_num_tokens": 8192,
    })  # fmt: skip
    code = build(checkpoint, tmp_path / "engines", "--targets", str(targets),
                 "--calib-data", str(calib_file))  # fmt: skip
    assert code == 1
    assert (
        "max_input_len 32768 >= max_seq_len 32768 [tensorchat recipe rule, "
        "enginebuild/targets.py: no room for a generated token]"
    ) in capsys.readouterr().err
    assert machine.calls("trtllm-build") == [] and machine.calls("tensorchat-quantize") == []


def test_recipe_advice_is_a_warning_and_the_build_goes_on(
    machine, checkpoint: Path, tiny_mistral_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The GPU check's tiny matrix: BF16 on an H100 builds, with the FP8 advice as a warning."""
    from tests.gpu.check.builds import TinyModel, write_tiny_matrix

    tiny = TinyModel("mistral", "llama", tiny_mistral_dir)
    targets = write_tiny_matrix([tiny], tmp_path / "tiny.yaml")
    out = tmp_path / "engines"
    assert build(checkpoint, out, "--targets", str(targets), model=tiny.id) == 0
    log = capsys.readouterr().out
    assert (
        "warning: h100 supports FP8 but the recipe uses bf16 weights [tensorchat recipe rule"
    ) in log
    assert len(machine.calls("trtllm-build")) == 1
    assert read_manifest(out / "tiny--mistral" / "h100").precision == Precision("bf16", "bf16")


def test_gpu_auto_on_ampere_converts_bf16_without_calibration(
    machine, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_GPU", "NVIDIA A100-SXM4-80GB, 8.0")
    out = tmp_path / "engines"
    assert build(checkpoint, out, model=QWEN, gpu="auto") == 0
    assert machine.calls("tensorchat-quantize") == []
    [convert] = machine.calls("tensorchat-convert-qwen")
    assert convert[convert.index("--dtype") + 1] == "bfloat16"
    manifest = read_manifest(out / "qwen--qwen2.5-coder-7b-instruct" / "a100-80gb")
    assert (manifest.gpu_key, manifest.precision) == ("a100-80gb", Precision("bf16", "bf16"))
    assert manifest.build_flags["--gemm_plugin"] == "auto"


def test_quantized_target_needs_local_calibration_data(
    machine, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build(checkpoint, tmp_path / "engines") == 1
    err = capsys.readouterr().err
    assert f"{MISTRAL} on h100 quantizes (fp8 weights, fp8 KV) and needs calibration text" in err
    assert "the build never downloads a dataset" in err
    assert machine.calls("tensorchat-quantize") == []


def test_wrong_tensorrt_llm_version_is_refused(
    machine, checkpoint: Path, calib_file: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    info = machine.site / "tensorrt_llm-1.2.1.dist-info"
    info.rename(machine.site / "tensorrt_llm-1.3.0rc5.dist-info")
    (machine.site / "tensorrt_llm-1.3.0rc5.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tensorrt_llm\nVersion: 1.3.0rc5\n"
    )
    assert build(checkpoint, tmp_path / "engines", "--calib-data", str(calib_file)) == 1
    assert (
        "engines are built with TensorRT-LLM 1.2.1 but this machine has TensorRT-LLM 1.3.0rc5"
    ) in capsys.readouterr().err


def test_failed_step_keeps_the_old_engine(
    machine, checkpoint: Path, calib_file: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "engines"
    assert build(checkpoint, out, "--calib-data", str(calib_file)) == 0
    engine = out / MISTRAL_SLUG / "h100"
    before = read_manifest(engine)
    capsys.readouterr()

    assert build(checkpoint, out, "--calib-data", str(calib_file)) == 1
    assert f"{engine} already exists; pass --force" in capsys.readouterr().err

    monkeypatch.setenv("STANDIN_FAIL", "trtllm-build")
    assert build(checkpoint, out, "--calib-data", str(calib_file), "--force") == 1
    err = capsys.readouterr().err
    assert "step 'trtllm-build' failed: trtllm-build exited with status 3; last output:" in err
    assert "trtllm-build: simulated failure" in err
    assert read_manifest(engine) == before


def test_verify_detects_a_changed_checkpoint(
    machine, checkpoint: Path, calib_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "engines"
    assert build(checkpoint, out, "--calib-data", str(calib_file)) == 0
    engine = out / MISTRAL_SLUG / "h100"
    capsys.readouterr()

    assert main(["verify", str(engine)]) == 0
    assert "pass --checkpoint DIR" in capsys.readouterr().out

    (checkpoint / "model.safetensors").write_bytes(b"other weights")
    assert main(["verify", str(engine), "--checkpoint", str(checkpoint)]) == 1
    log = capsys.readouterr().out
    assert "[FAIL] checkpoint sha256:" in log and "[ok] tokenizer sha256:" in log

    (engine / "rank0.engine").unlink()
    assert main(["verify", str(engine)]) == 1
    assert f"[FAIL] engine files: {engine / 'rank0.engine'} is missing" in capsys.readouterr().out


def test_list_shows_each_engine_and_whether_it_runs_here(
    machine, checkpoint: Path, calib_file: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "engines"
    assert build(checkpoint, out, "--calib-data", str(calib_file)) == 0
    capsys.readouterr()
    assert main(["list", str(out)]) == 0
    listing = capsys.readouterr().out
    assert f"{MISTRAL_SLUG}/h100\n    {MISTRAL} on h100 (NVIDIA H100 80GB HBM3, sm9.0)" in listing
    assert "runs here: yes" in listing

    monkeypatch.setenv("STANDIN_GPU", "NVIDIA L4, 8.9")
    assert main(["list", str(out)]) == 0
    assert "runs here: no — it was built for compute capability 9.0" in capsys.readouterr().out


@pytest.mark.slow  # ~20 s: the torch engine generates 3 x 32 tokens on CPU
def test_gpu_checks_drive_both_engines(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    """The GPU half of verify, over the fake Executor (TensorRT-LLM cannot run here) and the
    real torch engine on CPU: the flow, not the numbers, is what this can check."""
    import asyncio

    from enginebuild.verify import gpu_checks
    from tests.fakes.trtllm_fixtures import FAKE_RUNTIME, fake_trtllm_installed, write_fake_engine

    engine = write_fake_engine(
        tmp_path / "engine", model_id=MISTRAL, vocab_size=32768, checkpoint_dir=tiny_mistral_dir
    )
    with fake_trtllm_installed():
        checks = asyncio.run(
            gpu_checks(engine, read_manifest(engine), tiny_mistral_dir,
                       runtime=FAKE_RUNTIME, torch_device="cpu")
        )  # fmt: skip
    assert [c.name for c in checks] == ["smoke prompt", "greedy parity with torch"]
    assert checks[0].ok, checks[0].detail
    assert checks[0].detail.startswith("'The capital of France is' -> ")
    # The fake's tokens are a hash, not the model's: the rule names where they part.
    assert not checks[1].ok
    assert checks[1].detail.startswith("prompt 0: token 0: the engine chose ")
    assert checks[1].detail.endswith("(logprob tolerance 0.1 for bf16 weights)")
