"""The GPU check's tiny build matrix, its planned commands and the build runner (no GPU needed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from enginebuild.cli import add_engine_commands
from enginebuild.targets import Matrix, load_matrix
from tests.gpu.check import builds
from tests.gpu.check.builds import TINY_LIMITS, TinyModel


@pytest.fixture(scope="module")
def models(tiny_mistral_dir: Path, tiny_qwen2_dir: Path) -> list[TinyModel]:
    return [
        TinyModel("mistral", "llama", tiny_mistral_dir),
        TinyModel("qwen2", "qwen", tiny_qwen2_dir),
    ]


@pytest.fixture(scope="module")
def tiny_matrix_file(models: list[TinyModel], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builds.write_tiny_matrix(models, tmp_path_factory.mktemp("check") / "tiny.yaml")


def test_the_tiny_matrix_loads_with_every_gpu_and_the_bf16_recipe(
    tiny_matrix_file: Path, models: list[TinyModel]
) -> None:
    real, tiny = load_matrix(), load_matrix(tiny_matrix_file)
    assert tiny.gpus == real.gpus
    assert tiny.tensorrt_llm_version == real.tensorrt_llm_version
    recipe = builds.bf16_recipe_flags(real)
    for gpu in ("h100", "h200"):
        for model in models:
            target = tiny.target(model.id, gpu)
            assert target.limits == TINY_LIMITS
            assert dict(target.flags) == dict(recipe)
            assert not target.needs_calibration  # convert, no ModelOpt calibration


def test_the_tiny_model_specs_come_from_the_checkpoints(tiny_matrix_file: Path) -> None:
    spec = load_matrix(tiny_matrix_file).model("tiny/qwen2")
    assert (spec.converter, spec.vocab_size, spec.hidden_size) == ("qwen", 152064, 64)
    assert (spec.num_layers, spec.num_kv_heads, spec.head_dim) == (2, 2, 16)
    # Embedding and lm_head alone are 2 x 152064 x 64; the layers add the rest.
    assert spec.params > spec.unquantized_params == 2 * 152064 * 64


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_the_planned_tool_commands_are_valid_for_trtllm_1_2_1(
    tiny_matrix_file: Path, models: list[TinyModel], gpu: str, tmp_path: Path
) -> None:
    matrix: Matrix = load_matrix(tiny_matrix_file)
    for model in models:
        steps = builds.planned_steps(matrix, model, gpu, tmp_path)
        assert builds.tool_problems(steps) == []
        argv = {s.name: s.argv for s in steps}
        assert argv["convert"] is not None and argv["convert"][0] == (
            "tensorchat-convert-llama" if model.converter == "llama" else "tensorchat-convert-qwen"
        )
        build = argv["trtllm-build"]
        assert build is not None
        for name, value in vars(TINY_LIMITS).items():
            assert build[build.index(f"--{name}") + 1] == str(value)


def test_tool_problems_reports_an_invalid_command(
    tiny_matrix_file: Path, models: list[TinyModel], tmp_path: Path
) -> None:
    steps = builds.planned_steps(load_matrix(tiny_matrix_file), models[0], "h100", tmp_path)
    broken = next(s for s in steps if s.name == "trtllm-build")
    assert broken.argv is not None
    bad = type(broken)(broken.name, broken.description, (*broken.argv, "--no_such_flag"))
    assert builds.tool_problems([bad]) == [
        "trtllm-build: --no_such_flag: not a flag of this tool in TensorRT-LLM 1.2.1"
    ]


def test_the_build_command_is_an_engines_build_the_cli_accepts(
    tiny_matrix_file: Path, models: list[TinyModel], tmp_path: Path
) -> None:
    argv = builds.build_argv(models[1], tiny_matrix_file, tmp_path)
    assert argv[:4] == [sys.executable, "-m", "enginebuild", "build"]
    parser = argparse.ArgumentParser()
    add_engine_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv[3:])
    assert (args.model, args.gpu, args.targets) == ("tiny/qwen2", "auto", tiny_matrix_file)
    assert (args.checkpoint, args.out, args.force) == (models[1].checkpoint, tmp_path, True)


def test_run_builds_reports_success_failure_and_timeout(tmp_path: Path) -> None:
    python = sys.executable
    outcomes = builds.run_builds(
        {
            "ok": [python, "-c", "print('engine ready')"],
            "broken": [python, "-c", "import sys; print('one'); print('two'); sys.exit(3)"],
            "stuck": [python, "-c", "import time; time.sleep(60)"],
        },
        tmp_path / "logs",
        timeout_s=5,
    )
    assert outcomes["ok"].ok and outcomes["ok"].detail.startswith("built and verified in ")
    assert not outcomes["broken"].ok
    assert outcomes["broken"].detail.startswith("exit status 3: one | two; log ")
    assert not outcomes["stuck"].ok
    assert outcomes["stuck"].detail.startswith("timed out after 5s")
    assert (tmp_path / "logs" / "build-ok.log").read_text() == "engine ready\n"


def test_the_build_subprocess_imports_this_checkout() -> None:
    path = builds.pipeline_env()["PYTHONPATH"].split(":")
    assert path[:2] == [str(builds.REPO_ROOT), str(builds.REPO_ROOT / "build")]


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_the_tiny_bf16_recipe_is_only_advised_against_on_fp8_gpus(
    tiny_matrix_file: Path, models: list[TinyModel], gpu: str
) -> None:
    """`engines build` refuses recipe refusals; the tiny BF16 targets have none, only advice."""
    from enginebuild.targets import review_recipe

    for model in models:
        review = review_recipe(load_matrix(tiny_matrix_file).target(model.id, gpu))
        assert review.refusals == ()
        assert [a.split(" [")[0] for a in review.advice] == [
            f"{gpu} supports FP8 but the recipe uses bf16 weights"
        ]
