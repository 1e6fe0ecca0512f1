"""Every target of build/targets.yaml: its plan is generated and obeys the 1.2.1 rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from enginebuild import flags as tools
from enginebuild.plan import BuildPaths, make_plan
from enginebuild.sizing import kv_bytes_per_token, size, sizing_problems, weight_bytes
from enginebuild.targets import Matrix, Target, TargetError, is_power_of_two, recipe_problems
from inference.engines.manifest import Limits, Precision

MODELS = ("mistralai/Mistral-7B-Instruct-v0.3", "Qwen/Qwen2.5-Coder-7B-Instruct")
GPUS = ("h200", "h100", "l40s", "l4", "a100-80gb", "a100-40gb", "a10g")


def _plan(target: Target) -> list[list[str]]:
    paths = BuildPaths.for_target(
        target,
        checkpoint=Path("/models/ckpt"),
        out_root=Path("/engines"),
        calib_data=Path("/data/calib.jsonl"),
    )
    return [list(s.argv) for s in make_plan(target, paths) if s.argv is not None]


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_matrix_covers_both_models_on_every_gpu(matrix: Matrix) -> None:
    pairs = {(t.model.id, t.gpu.key) for t in matrix.targets}
    assert pairs == {(m, g) for m in MODELS for g in GPUS}
    assert matrix.tensorrt_llm_version == "1.2.1"


def _targets() -> list[str]:
    return [f"{m}@{g}" for m in MODELS for g in GPUS]


@pytest.fixture(params=_targets())
def target(request: pytest.FixtureRequest, matrix: Matrix) -> Target:
    model, gpu = request.param.split("@")
    return matrix.target(model, gpu)


def test_every_planned_command_is_valid_for_1_2_1(target: Target) -> None:
    commands = _plan(target)
    tool_commands = [c for c in commands if c[0] in tools.TOOL_FLAGS]
    assert [c[0] for c in tool_commands][-1] == tools.TRTLLM_BUILD
    for argv in tool_commands:
        assert tools.validate_command(argv) == [], argv


def test_fp8_only_on_ada_and_hopper(target: Target) -> None:
    text = " ".join(" ".join(c) for c in _plan(target))
    fp8_gpu = target.gpu.compute_capability in ("8.9", "9.0")
    if fp8_gpu:
        assert target.precision == Precision("fp8", "fp8")
        assert "--qformat fp8" in text and "--kv_cache_dtype fp8" in text
    else:
        assert "fp8" not in text.replace("--use_fp8_context_fmha disable", "")
        assert target.precision.weights in ("bf16", "int8_wo", "int4_awq")


def test_limits_are_explicit_and_consistent(target: Target) -> None:
    build = next(c for c in _plan(target) if c[0] == tools.TRTLLM_BUILD)
    max_input = _flag(build, "--max_input_len")
    max_seq = _flag(build, "--max_seq_len")
    max_tokens = _flag(build, "--max_num_tokens")
    assert max_input is not None and max_seq is not None and max_tokens is not None
    assert int(max_input) < int(max_seq) <= target.model.max_position_embeddings
    assert is_power_of_two(int(max_tokens))
    assert int(_flag(build, "--max_batch_size") or 0) == target.limits.max_batch_size


def test_every_feature_flag_has_an_explicit_value(target: Target) -> None:
    build = next(c for c in _plan(target) if c[0] == tools.TRTLLM_BUILD)
    parsed, problems = tools.parse_flags(build[1:], tools.TRTLLM_BUILD_FLAGS)
    assert problems == []
    for name in ("--multiple_profiles", "--use_paged_context_fmha", "--context_fmha",
                 "--use_fp8_context_fmha", "--gemm_plugin", "--kv_cache_type"):  # fmt: skip
        assert parsed.get(name), f"{name} not set explicitly"
    assert not any(v == "" for v in parsed.values()), "no bare switches in trtllm-build plans"


def test_recipe_and_sizing_rules_hold(target: Target, matrix: Matrix) -> None:
    assert recipe_problems(target) == []
    assert sizing_problems(target, matrix.sizing) == []


def test_quantized_targets_calibrate_offline_bf16_converts(target: Target) -> None:
    commands = _plan(target)
    tools_used = [c[0] for c in commands]
    if target.needs_calibration:
        assert tools.QUANTIZE in tools_used
        calib = next(c for c in commands if "enginebuild.calib" in c)
        quantize = next(c for c in commands if c[0] == tools.QUANTIZE)
        assert _flag(quantize, "--calib_dataset") == _flag(calib, "--output")
    else:
        converter = {"llama": tools.CONVERT_LLAMA, "qwen": tools.CONVERT_QWEN}
        assert converter[target.model.converter] in tools_used
        assert tools.QUANTIZE not in tools_used


def test_recipe_rules_catch_fp8_on_ampere(matrix: Matrix) -> None:
    a100 = matrix.target(MODELS[0], "a100-80gb")
    bad = dataclasses.replace(a100, precision=Precision("fp8", "fp8"))
    problems = recipe_problems(bad)
    assert any("FP8 on a100-80gb (sm8.0)" in p for p in problems)


def test_recipe_rules_catch_bad_limits_and_hopper_flags(matrix: Matrix) -> None:
    l4 = matrix.target(MODELS[0], "l4")
    bad = dataclasses.replace(
        l4,
        limits=Limits(max_batch_size=48, max_input_len=16384, max_seq_len=16384,
                      max_num_tokens=3000),
        flags={**l4.flags, "--gemm_swiglu_plugin": "fp8"},
    )  # fmt: skip
    problems = "\n".join(recipe_problems(bad))
    assert "max_input_len 16384 >= max_seq_len 16384" in problems
    assert "max_num_tokens 3000 is not a power of two" in problems
    assert "max_batch_size 48 is not a power of two" in problems
    assert "--gemm_swiglu_plugin is Hopper-only but the target is l4" in problems


def test_sizing_uses_kv_bytes_per_token_from_the_model(matrix: Matrix) -> None:
    mistral_h100 = matrix.target(MODELS[0], "h100")
    qwen_a100 = matrix.target(MODELS[1], "a100-80gb")
    # 2 (K, V) x layers x kv_heads x head_dim x bytes
    assert kv_bytes_per_token(mistral_h100) == 2 * 32 * 8 * 128 * 1
    assert kv_bytes_per_token(qwen_a100) == 2 * 28 * 4 * 128 * 2
    assert weight_bytes(qwen_a100) == qwen_a100.model.params * 2
    fp8 = weight_bytes(mistral_h100)
    assert mistral_h100.model.params < fp8 < mistral_h100.model.params * 2
    sizing = size(mistral_h100, matrix.sizing)
    assert sizing.kv_tokens == sizing.kv_budget_bytes // kv_bytes_per_token(mistral_h100)


def test_sizing_flags_a_context_that_does_not_fit(matrix: Matrix) -> None:
    a10g = matrix.target(MODELS[0], "a10g")
    huge = dataclasses.replace(
        a10g, precision=Precision("bf16", "bf16"),
        limits=Limits(max_batch_size=1024, max_input_len=31744, max_seq_len=32768,
                      max_num_tokens=4096),
    )  # fmt: skip
    problems = "\n".join(sizing_problems(huge, matrix.sizing))
    assert "requests of max_seq_len 32768, fewer than 4" in problems
    assert "under half of max_batch_size 1024" in problems


def test_unknown_model_or_gpu_is_named(matrix: Matrix) -> None:
    with pytest.raises(TargetError, match="unknown GPU 'v100'"):
        matrix.target(MODELS[0], "v100")
    with pytest.raises(TargetError, match="unknown model 'meta/llama'"):
        matrix.target("meta/llama", "h100")
    assert matrix.model("qwen/qwen2.5-coder-7b-instruct").id == MODELS[1]
