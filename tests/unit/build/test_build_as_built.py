"""Issue 13 point 7: the manifest records what trtllm-build built (config.json), not what was
asked; and the stand-in trtllm-build refuses and overrides as 1.2.1 does."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from enginebuild.__main__ import main
from enginebuild.builder import Resolved, make_manifest
from enginebuild.engine_config import built_plugin_flags
from enginebuild.plan import BuildPaths, trtllm_build_argv
from enginebuild.targets import Matrix
from inference.engines.manifest import GpuInfo, RuntimeInfo, read_manifest
from tests.unit.build.conftest import FakeMachine

QWEN = "Qwen/Qwen2.5-Coder-7B-Instruct"
L4 = RuntimeInfo(GpuInfo("NVIDIA L4", "8.9"), "1.2.1", "10.14.1.48")


def test_manifest_takes_plugin_flags_from_config_json(
    matrix: Matrix, checkpoint: Path, tmp_path: Path
) -> None:
    target = matrix.target(QWEN, "l4")
    asked = {**target.flags, "--use_fp8_context_fmha": "disable"}
    target = dataclasses.replace(target, flags=asked)
    paths = BuildPaths.for_target(
        target, checkpoint=checkpoint, out_root=tmp_path / "engines", calib_data=None
    )
    paths.staging_dir.mkdir(parents=True)
    plugin_config = {"use_fp8_context_fmha": True, "use_paged_context_fmha": True}
    config = {"version": "1.2.1", "build_config": {"plugin_config": plugin_config}}
    (paths.staging_dir / "config.json").write_text(json.dumps(config))
    warn = io.StringIO()
    manifest = make_manifest(
        Resolved(target, cross=False), paths, L4, trtllm_build_argv(target, paths), warn=warn
    )
    assert manifest.build_flags["--use_fp8_context_fmha"] == "enable"
    assert manifest.build_flags["--use_paged_context_fmha"] == "enable"
    assert manifest.build_flags["--gemm_plugin"] == "disable"  # not in config.json: as asked
    assert (
        "warning: trtllm-build changed a flag: --use_fp8_context_fmha disable was asked, "
        "config.json says enable"
    ) in warn.getvalue()


def test_ada_build_manifest_agrees_with_config_json(
    machine, checkpoint: Path, calib_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    monkeypatch.setenv("STANDIN_GPU", "NVIDIA L4, 8.9")
    out = tmp_path / "engines"
    argv = ["build", "--model", QWEN, "--gpu", "l4", "--checkpoint", str(checkpoint),
            "--out", str(out), "--calib-data", str(calib_file)]  # fmt: skip
    assert main(argv) == 0
    engine = out / "qwen--qwen2.5-coder-7b-instruct" / "l4"
    config = json.loads((engine / "config.json").read_text())
    built = built_plugin_flags(config)
    manifest = read_manifest(engine)
    assert built["--use_fp8_context_fmha"] == "enable"
    assert {name: manifest.build_flags[name] for name in built if name in manifest.build_flags} == {
        name: value for name, value in built.items() if name in manifest.build_flags
    }
    assert manifest.build_flags["--use_fp8_context_fmha"] == "enable"

    # verify compares them too: an engine whose config.json disagrees fails the static checks.
    config["build_config"]["plugin_config"]["use_fp8_context_fmha"] = False
    (engine / "config.json").write_text(json.dumps(config))
    assert main(["verify", str(engine)]) == 1


def _checkpoint(root: Path, quant_algo: str | None, kv: str | None) -> Path:
    root.mkdir(parents=True)
    config = {
        "architecture": "LlamaForCausalLM",
        "quantization": {"quant_algo": quant_algo, "kv_cache_quant_algo": kv},
        "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1},
    }
    (root / "config.json").write_text(json.dumps(config))
    return root


def _standin_build(
    machine: FakeMachine, ckpt: Path, out: Path, gpu: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(machine.bin / "trtllm-build"), "--checkpoint_dir", str(ckpt), "--output_dir",
         str(out), "--max_batch_size", "8", *flags],
        capture_output=True, text=True, env={**os.environ, "STANDIN_GPU": gpu}, check=False,
    )  # fmt: skip


def test_standin_trtllm_build_drops_paged_context_fmha_with_int8_kv(
    machine, tmp_path: Path
) -> None:  # fmt: skip
    ckpt = _checkpoint(tmp_path / "ckpt", "W8A16", "INT8")
    result = _standin_build(machine, ckpt, tmp_path / "engine", "NVIDIA A10G, 8.6",
                            "--use_paged_context_fmha", "enable")  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert (
        "[TRT-LLM] [W] Paged Context FMHA is disabled because it doesn't work with int8 kv "
        "cache currently."
    ) in result.stdout
    config = json.loads((tmp_path / "engine" / "config.json").read_text())
    assert config["build_config"]["plugin_config"]["use_paged_context_fmha"] is False


def test_standin_trtllm_build_refuses_with_the_release_message(
    machine, tmp_path: Path
) -> None:  # fmt: skip
    ckpt = _checkpoint(tmp_path / "ckpt", "W8A16", None)
    result = _standin_build(machine, ckpt, tmp_path / "engine", "NVIDIA B200, 10.0")
    assert result.returncode == 1
    assert "RuntimeError: INT8/INT4 quantization is not supported on SM>=100." in result.stdout
    assert not (tmp_path / "engine" / "config.json").exists()
