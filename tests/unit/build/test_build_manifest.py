"""inference/engines/manifest.py: round trip, every compatibility decision, engine selection."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inference.engines.base import EngineUnavailableError
from inference.engines.manifest import (
    MANIFEST_FILENAME,
    EngineManifest,
    EngineMismatchError,
    GpuInfo,
    Limits,
    ManifestError,
    Precision,
    RuntimeInfo,
    check_engine,
    checkpoint_sha256,
    detect_runtime,
    gpu_key_for,
    model_slug,
    parse_nvidia_smi,
    read_manifest,
    select_engine,
    tokenizer_sha256,
    write_manifest,
)

MISTRAL = "mistralai/Mistral-7B-Instruct-v0.3"
QWEN = "Qwen/Qwen2.5-Coder-7B-Instruct"
H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
L4 = GpuInfo("NVIDIA L4", "8.9")
HERE_H100 = RuntimeInfo(gpu=H100, tensorrt_llm_version="1.2.1", tensorrt_version="10.14.1.48")


def manifest_for(model_id: str = MISTRAL, gpu: GpuInfo = H100, **changes: object) -> EngineManifest:
    fields: dict[str, object] = {
        "model_id": model_id,
        "checkpoint_sha256": "a" * 64,
        "tokenizer_sha256": "b" * 64,
        "gpu_key": gpu_key_for(gpu.name) or "h100",
        "gpu_name": gpu.name,
        "compute_capability": gpu.compute_capability,
        "tensorrt_llm_version": "1.2.1",
        "tensorrt_version": "10.14.1.48",
        "precision": Precision("fp8", "fp8"),
        "limits": Limits(256, 31744, 32768, 8192),
        "build_flags": {"--multiple_profiles": "enable"},
        "created_at": "2026-11-22T00:00:00+00:00",
    }
    fields.update(changes)
    return EngineManifest(**fields)  # type: ignore[arg-type]


def make_engine(root: Path, manifest: EngineManifest, *, version: str | None = None) -> Path:
    """An engine dir as trtllm-build + the builder leave it: <root>/<slug>/<gpu-key>/."""
    engine = root / model_slug(manifest.model_id) / manifest.gpu_key
    engine.mkdir(parents=True)
    config = {
        "version": version or manifest.tensorrt_llm_version,
        "pretrained_config": {"mapping": {"world_size": manifest.world_size}},
        "build_config": {"max_input_len": manifest.limits.max_input_len},
    }
    (engine / "config.json").write_text(json.dumps(config))
    for rank in range(manifest.world_size):
        (engine / f"rank{rank}.engine").write_bytes(b"engine")
    write_manifest(engine, manifest)
    return engine


def mismatch(engine: Path, model_id: str, runtime: RuntimeInfo) -> str:
    with pytest.raises(EngineMismatchError) as info:
        check_engine(engine, model_id=model_id, runtime=runtime)
    return str(info.value)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    manifest = manifest_for(world_size=2, cross_plan=True)
    path = write_manifest(tmp_path, manifest)
    assert path == tmp_path / MANIFEST_FILENAME
    assert read_manifest(tmp_path) == manifest
    assert json.loads(path.read_text())["schema_version"] == 1


def test_errors_are_engine_unavailable() -> None:
    assert issubclass(ManifestError, EngineUnavailableError)
    assert issubclass(EngineMismatchError, EngineUnavailableError)


def test_missing_and_damaged_manifest_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=f"{tmp_path / MANIFEST_FILENAME} is missing"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_FILENAME).write_text("{not json")
    with pytest.raises(ManifestError, match=f"{tmp_path / MANIFEST_FILENAME} is damaged"):
        read_manifest(tmp_path)
    data = manifest_for().to_dict()
    del data["limits"]
    (tmp_path / MANIFEST_FILENAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="is damaged: missing field 'limits'"):
        read_manifest(tmp_path)
    data = manifest_for().to_dict() | {"schema_version": 99}
    (tmp_path / MANIFEST_FILENAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="schema_version 99 is not 1"):
        read_manifest(tmp_path)


def test_matching_engine_passes(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, manifest_for())
    # Model ids are matched case-insensitively, as the registry's aliases are.
    assert check_engine(engine, model_id=MISTRAL.lower(), runtime=HERE_H100) == manifest_for()


def test_other_compute_capability(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, manifest_for())
    runtime = RuntimeInfo(gpu=L4, tensorrt_llm_version="1.2.1", tensorrt_version="10.14.1.48")
    assert mismatch(engine, MISTRAL, runtime) == (
        f"engine {engine} cannot serve {MISTRAL} here: it was built for compute capability 9.0 "
        "(NVIDIA H100 80GB HBM3) but this GPU is NVIDIA L4 with compute capability 8.9. "
        f"Build a matching engine with: tensorchat engines build --model {MISTRAL} --gpu l4 "
        f"--checkpoint <HF_CHECKPOINT_DIR> --out {tmp_path}"
    )


def test_other_tensorrt_llm_version(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, manifest_for())
    runtime = RuntimeInfo(gpu=H100, tensorrt_llm_version="1.2.0", tensorrt_version="10.14.1.48")
    message = mismatch(engine, MISTRAL, runtime)
    assert "it was built with TensorRT-LLM 1.2.1 but TensorRT-LLM 1.2.0 is installed" in message
    assert message.endswith(
        f"tensorchat engines build --model {MISTRAL} --gpu h100 "
        f"--checkpoint <HF_CHECKPOINT_DIR> --out {tmp_path}"
    )


def test_missing_tensorrt_llm_and_gpu(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, manifest_for())
    message = mismatch(engine, MISTRAL, RuntimeInfo(None, None, None))
    assert (
        "no NVIDIA GPU was detected (nvidia-smi); the engine needs compute capability 9.0"
        in message
    )
    assert "TensorRT-LLM is not installed; the engine needs TensorRT-LLM 1.2.1" in message
    assert "--gpu auto" in message


def test_other_model_uses_the_given_checkpoint_in_the_command(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, manifest_for(model_id=QWEN))
    with pytest.raises(EngineMismatchError) as info:
        check_engine(engine, model_id=MISTRAL, runtime=HERE_H100, checkpoint_dir=Path("/m/x"))
    assert f"it was built for model {QWEN}, not {MISTRAL}" in str(info.value)
    assert f"--model {MISTRAL} --gpu h100 --checkpoint /m/x" in str(info.value)


def test_other_tensorrt_version(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, manifest_for())
    runtime = RuntimeInfo(gpu=H100, tensorrt_llm_version="1.2.1", tensorrt_version="10.13.3")
    assert "built with TensorRT 10.14.1.48 but TensorRT 10.13.3 is installed" in mismatch(
        engine, MISTRAL, runtime
    )


def test_missing_config_and_rank_files(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, manifest_for(world_size=2))
    (engine / "rank1.engine").unlink()
    assert f"{engine / 'rank1.engine'} is missing or empty" in mismatch(engine, MISTRAL, HERE_H100)
    (engine / "config.json").unlink()
    assert f"{engine / 'config.json'} is missing" in mismatch(engine, MISTRAL, HERE_H100)


def test_damaged_manifest_and_replaced_engine_files(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, manifest_for(), version="1.3.0rc5")
    assert "config.json says TensorRT-LLM 1.3.0rc5 but the manifest says 1.2.1" in mismatch(
        engine, MISTRAL, HERE_H100
    )
    (engine / MANIFEST_FILENAME).write_text("[]")
    message = mismatch(engine, MISTRAL, HERE_H100)
    assert f"engine manifest {engine / MANIFEST_FILENAME} is damaged" in message
    assert "Build a matching engine with: tensorchat engines build" in message


def test_cross_plan_engine_is_never_served(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, manifest_for(cross_plan=True))
    assert "cross-plan build" in mismatch(engine, MISTRAL, HERE_H100)


def test_select_engine_prefers_this_gpu_then_same_architecture(tmp_path: Path) -> None:
    h100 = make_engine(tmp_path, manifest_for())
    h200_manifest = manifest_for(gpu=GpuInfo("NVIDIA H200", "9.0"))
    h200 = make_engine(tmp_path, h200_manifest)
    make_engine(tmp_path, manifest_for(gpu=L4))
    (tmp_path / model_slug(MISTRAL) / ".h100.building").mkdir()  # a build in progress
    assert select_engine(tmp_path, model_id=MISTRAL, runtime=HERE_H100) == h100
    # With only the H200 engine left, the H100 still runs it (same sm90 architecture).
    for f in h100.iterdir():
        f.unlink()
    h100.rmdir()
    assert select_engine(tmp_path, model_id=MISTRAL, runtime=HERE_H100) == h200


def test_select_engine_error_lists_what_was_found(tmp_path: Path) -> None:
    make_engine(tmp_path, manifest_for(gpu=L4))
    make_engine(tmp_path, manifest_for(gpu=GpuInfo("NVIDIA A10G", "8.6")))
    with pytest.raises(EngineMismatchError) as info:
        select_engine(tmp_path, model_id=MISTRAL, runtime=HERE_H100)
    message = str(info.value)
    assert message.startswith(
        f"no engine under {tmp_path} can serve {MISTRAL} on NVIDIA H100 80GB HBM3 "
        "(compute capability 9.0) with TensorRT-LLM 1.2.1. Found: a10g: it was built for "
        "compute capability 8.6"
    )
    assert "; l4: it was built for compute capability 8.9" in message
    assert message.endswith(
        f"Build one with: tensorchat engines build --model {MISTRAL} --gpu h100 "
        f"--checkpoint <HF_CHECKPOINT_DIR> --out {tmp_path}"
    )
    with pytest.raises(EngineMismatchError, match=f"Found: no engines in {tmp_path}/qwen--"):
        select_engine(tmp_path, model_id=QWEN, runtime=HERE_H100)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 NVL", "h100"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA GH200 480GB", None),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb"),
        ("NVIDIA-A100-PCIE-40GB", "a100-40gb"),
        ("NVIDIA A10G", "a10g"),
        ("Tesla T4", None),
    ],
)
def test_gpu_key_for(name: str, key: str | None) -> None:
    assert gpu_key_for(name) == key


def test_parse_nvidia_smi_takes_the_first_gpu() -> None:
    out = "NVIDIA A100-SXM4-80GB, 8.0\nNVIDIA A100-SXM4-80GB, 8.0\n"
    assert parse_nvidia_smi(out) == GpuInfo("NVIDIA A100-SXM4-80GB", "8.0")
    assert parse_nvidia_smi("No devices were found\n") is None


def test_detect_runtime_reads_nvidia_smi_and_package_metadata(
    machine: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_GPU", "NVIDIA L40S, 8.9")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4")
    runtime = detect_runtime()
    assert runtime == RuntimeInfo(GpuInfo("NVIDIA L40S", "8.9"), "1.2.1", "10.14.1.48")
    calls = machine.calls("nvidia-smi")  # type: ignore[attr-defined]
    # nvidia-smi ignores CUDA_VISIBLE_DEVICES, so the device is asked for explicitly.
    assert calls == [["--query-gpu=name,compute_cap", "--format=csv,noheader", "--id=3"]]


def test_detect_runtime_without_gpu_or_packages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    assert detect_runtime() == RuntimeInfo(None, None, None)


def test_hashes_follow_the_files(checkpoint: Path) -> None:
    weights, tokenizer = checkpoint_sha256(checkpoint), tokenizer_sha256(checkpoint)
    assert weights != tokenizer
    # Mistral repos also ship consolidated.safetensors (the same weights, Mistral format).
    (checkpoint / "consolidated.safetensors").write_bytes(os.urandom(64))
    assert checkpoint_sha256(checkpoint) == weights
    (checkpoint / "model.safetensors").write_bytes(os.urandom(256))
    assert checkpoint_sha256(checkpoint) != weights
    assert tokenizer_sha256(checkpoint) == tokenizer
    (checkpoint / "tokenizer.json").write_text("{}")
    assert tokenizer_sha256(checkpoint) != tokenizer


def test_sharded_checkpoint_hashes_the_index_and_its_shards(checkpoint: Path) -> None:
    (checkpoint / "model.safetensors").unlink()
    for i in (1, 2):
        (checkpoint / f"model-0000{i}-of-00002.safetensors").write_bytes(os.urandom(32))
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}}  # fmt: skip
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    before = checkpoint_sha256(checkpoint)
    (checkpoint / "model-00002-of-00002.safetensors").write_bytes(os.urandom(32))
    assert checkpoint_sha256(checkpoint) != before


def test_checkpoint_without_weights_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ManifestError, match="no weights"):
        checkpoint_sha256(tmp_path)
