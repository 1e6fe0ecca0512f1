"""The `engines` command surface: help text, plan output, k8s Jobs, CI matrix, calibration data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from enginebuild.__main__ import main
from enginebuild.calib import CalibrationDataError, read_samples
from enginebuild.calib import main as calib_main
from enginebuild.cli import register
from enginebuild.k8s import JobOptions, job_name, render_job
from enginebuild.targets import Matrix

MISTRAL = "mistralai/Mistral-7B-Instruct-v0.3"


def _engines_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="tensorchat")
    register(top.add_subparsers(dest="command"))
    return top


def test_register_adds_engines_with_every_subcommand() -> None:
    top = _engines_parser()
    args = top.parse_args(["engines", "list", "/srv/engines"])
    assert args.root == Path("/srv/engines")
    assert callable(args.handler)
    sub_actions = [
        a for a in top._subparsers._group_actions  # type: ignore[union-attr]
        if isinstance(a, argparse._SubParsersAction)
    ]  # fmt: skip
    engines = sub_actions[0].choices["engines"]
    commands = next(
        a for a in engines._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    assert set(commands) == {"plan", "build", "verify", "list", "k8s", "matrix"}
    # Every flag of every subcommand is documented in --help.
    for name, parser in commands.items():
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"engines {name} {action.option_strings} has no help"
                assert action.option_strings[0] in parser.format_help()


def test_bare_engines_prints_usage() -> None:
    args = _engines_parser().parse_args(["engines"])
    assert args.handler(args) == 2


def test_plan_prints_each_step_with_its_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", MISTRAL, "--gpu", "l4", "--calib-data", "/d/c.jsonl"]) == 0
    out = capsys.readouterr().out
    assert "precision: fp8 weights, fp8 KV cache" in out
    assert "sizing: weights 7.0 GiB, KV 64 KiB/token" in out
    for step in ("1. calibration-data", "2. quantize", "3. trtllm-build", "4. manifest",
                 "5. verify", "6. install"):  # fmt: skip
        assert step in out
    assert "$ trtllm-build --checkpoint_dir /engines/.work/" in out
    assert "--max_input_len 15360 --max_seq_len 16384" in out
    assert "tensorchat-quantize = python3 $TRTLLM_SRC/examples/quantization/quantize.py" in out


def test_plan_names_an_unknown_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", MISTRAL, "--gpu", "v100"]) == 1
    assert "error: unknown GPU 'v100'" in capsys.readouterr().err


def test_k8s_job_per_target_selects_its_gpu_and_mounts_volumes(matrix: Matrix) -> None:
    names = set()
    for target in matrix.targets:
        job = yaml.safe_load(render_job(target, JobOptions(image="registry/builder:1")))
        spec = job["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == {"nvidia.com/gpu.product": target.gpu.product}
        container = spec["containers"][0]
        assert container["image"] == "registry/builder:1"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        command = container["command"]
        assert command[:4] == ["python3", "-m", "enginebuild", "build"]
        assert command[command.index("--gpu") + 1] == target.gpu.key
        assert command[command.index("--out") + 1] == "/engines"
        assert ("--calib-data" in command) == target.needs_calibration
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["engines"] == "/engines"
        claims = {v["name"]: v.get("persistentVolumeClaim") for v in spec["volumes"]}
        assert claims["engines"] == {"claimName": "tensorchat-engines"}
        name = job["metadata"]["name"]
        assert len(name) <= 63 and name == job_name(target)
        names.add(name)
    assert len(names) == len(matrix.targets)


def test_k8s_command_renders_one_or_all(
    tmp_path: Path, matrix: Matrix, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["k8s", "--model", MISTRAL, "--gpu", "a10g", "--product", "NVIDIA-A10G-X"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert job["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == (
        "NVIDIA-A10G-X"
    )
    assert main(["k8s", "--all", "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.yaml"))) == len(matrix.targets)


def test_matrix_json_feeds_the_workflow(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["matrix"]) == 0
    include = json.loads(capsys.readouterr().out)["include"]
    assert len(include) == 14
    assert {"model", "gpu", "slug", "runner_label", "needs_calibration"} <= set(include[0])
    assert main(["matrix", "--gpu", "a100-80gb"]) == 0
    only = json.loads(capsys.readouterr().out)["include"]
    assert {e["gpu"] for e in only} == {"a100-80gb"}
    assert not any(e["needs_calibration"] for e in only)


def test_calibration_formats(tmp_path: Path) -> None:
    text = tmp_path / "c.txt"
    text.write_text("first sample\nspans lines\n\n\nsecond sample\n")
    assert read_samples(text) == ["first sample\nspans lines", "second sample"]
    listed = tmp_path / "c.json"
    listed.write_text(json.dumps(["a", {"prompt": "b"}, {"messages": [{"content": "c"}]}, 3]))
    assert read_samples(listed) == ["a", "b", "c"]
    empty = tmp_path / "e.jsonl"
    empty.write_text(json.dumps({"text": "  "}) + "\n")
    with pytest.raises(CalibrationDataError, match="holds no calibration text"):
        read_samples(empty)


def test_calibration_command_writes_a_train_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "c.jsonl"
    source.write_text("\n".join(json.dumps({"text": f"s{i}"}) for i in range(3)) + "\n")
    assert calib_main(["--input", str(source), "--output", str(tmp_path / "ds")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "ds" / "train.jsonl").read_text().splitlines()]
    assert rows == [{"text": "s0"}, {"text": "s1"}, {"text": "s2"}]
    assert "only 3 samples" in capsys.readouterr().err
    assert calib_main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path)]) == 1
