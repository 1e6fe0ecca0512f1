"""The 1.2.1 flag record (trtllm_1_2_1_flags.yaml): what the real tools accept and reject."""

from __future__ import annotations

import re

import pytest
import yaml

from enginebuild import flags as tools


def test_valid_trtllm_build_command_has_no_problems() -> None:
    argv = [tools.TRTLLM_BUILD, "--checkpoint_dir", "/c", "--output_dir", "/e",
            "--max_input_len", "1024", "--multiple_profiles", "enable", "--gemm_plugin", "auto",
            "--strip_plan"]  # fmt: skip
    assert tools.validate_command(argv) == []


def test_unknown_flag_bad_choice_and_missing_value_are_named() -> None:
    argv = [tools.TRTLLM_BUILD, "--max_input_length", "1024", "--multiple_profiles",
            "--gemm_plugin", "fp16", "--max_batch_size", "0"]  # fmt: skip
    problems = tools.validate_command(argv)
    assert "--max_input_length: not a flag of this tool in TensorRT-LLM 1.2.1" in problems
    # 1.x takes an explicit value: a bare --multiple_profiles (0.x docs) is an error.
    assert "--multiple_profiles: needs a value" in problems
    assert any(p.startswith("--gemm_plugin: 'fp16' is not one of auto") for p in problems)
    assert "--max_batch_size: 0 must be positive" in problems


def test_deprecated_and_duplicate_flags_are_rejected() -> None:
    argv = [tools.TRTLLM_BUILD, "--paged_kv_cache", "enable", "--workers", "1", "--workers", "2"]
    problems = tools.validate_command(argv)
    assert "--paged_kv_cache: deprecated in 1.2.1 (use --kv_cache_type paged)" in problems
    assert "--workers: given twice" in problems


def test_hopper_fp8_plugins_only_take_fp8() -> None:
    problems = tools.validate_command([tools.TRTLLM_BUILD, "--gemm_swiglu_plugin", "bfloat16"])
    assert problems == ["--gemm_swiglu_plugin: 'bfloat16' is not one of fp8, disable"]


def test_quantize_and_converter_tables_differ_where_the_scripts_do() -> None:
    assert tools.validate_command([tools.QUANTIZE, "--qformat", "int4_awq"]) == []
    assert tools.validate_command([tools.QUANTIZE, "--qformat", "int4-awq"]) != []
    # The Qwen converter has no AWQ weight-only precision (that is quantize.py's job).
    llama = [tools.CONVERT_LLAMA, "--use_weight_only", "--weight_only_precision", "int4_awq"]
    qwen = [tools.CONVERT_QWEN, "--use_weight_only", "--weight_only_precision", "int4_awq"]
    assert tools.validate_command(llama) == []
    assert tools.validate_command(qwen) != []
    assert tools.validate_command(["python3", "quantize.py"]) == [
        "python3: not a TensorRT-LLM tool this pipeline knows"
    ]


def test_parse_flags_returns_values_and_switches() -> None:
    parsed, problems = tools.parse_flags(
        ["--max_seq_len", "4096", "--fast_build"], tools.TRTLLM_BUILD_FLAGS
    )
    assert problems == []
    assert parsed == {"--max_seq_len": "4096", "--fast_build": ""}


def _valid_args(name: str, flag: tools.Flag) -> list[str]:
    """The flag with a value its argparse definition accepts."""
    if flag.kind is tools.Kind.SWITCH:
        return [name]
    value = {tools.Kind.INT: "2", tools.Kind.FLOAT: "0.5"}.get(flag.kind, "x")
    if flag.kind is tools.Kind.CHOICE:
        value = flag.choices[0]
    return [name, value]


def _recorded_flags() -> list[tuple[str, str]]:
    return [(tool, name) for tool, table in tools.TOOL_FLAGS.items() for name in table]


@pytest.mark.parametrize(("tool", "name"), _recorded_flags())
def test_every_recorded_flag_is_accepted_with_a_valid_value(tool: str, name: str) -> None:
    flag = tools.TOOL_FLAGS[tool][name]
    problems = tools.validate_command([tool, *_valid_args(name, flag)])
    expected = [f"{name}: deprecated in 1.2.1 ({flag.deprecated})"] if flag.deprecated else []
    assert problems == expected


def test_record_names_the_source_of_every_script() -> None:
    record = tools.load_record()
    assert set(record) == {tools.TRTLLM_BUILD, *tools.TOOL_SCRIPTS.values()}
    raw = yaml.safe_load(tools.FLAGS_RECORD.read_text())
    for script in raw["scripts"].values():
        assert re.fullmatch(r"[0-9a-f]{40}", script["commit"]), script["file"]
        assert script["file"].endswith(".py") and script["at"]


def test_flags_the_1_2_1_scripts_have_that_the_old_hand_tables_lacked() -> None:
    # Read from the scripts' argparse definitions (see trtllm_1_2_1_flags.yaml).
    assert tools.validate_command([tools.CONVERT_QWEN, "--cp_size", "1"]) == []
    assert tools.validate_command([tools.QUANTIZE, "--cp_size", "1"]) == []
    assert tools.validate_command([tools.TRTLLM_BUILD, "--max_decoder_seq_len", "4096"]) == []
    assert tools.validate_command([tools.TRTLLM_BUILD, "--dora_plugin", "disable"]) == []
    assert tools.validate_command([tools.CONVERT_LLAMA, "--use_fp8", "--fp8_kv_cache"]) == []
    # ... and the Qwen converter has no FP8 switches.
    assert tools.validate_command([tools.CONVERT_QWEN, "--use_fp8"]) != []


def test_nargs_optional_and_many_values() -> None:
    # --weight_only_precision has nargs="?" (const int8); --lora_dir nargs="+".
    assert tools.validate_command([tools.CONVERT_QWEN, "--weight_only_precision"]) == []
    parsed, problems = tools.parse_flags(
        ["--lora_dir", "/a", "/b", "--workers", "1"], tools.TRTLLM_BUILD_FLAGS
    )
    assert problems == []
    assert parsed == {"--lora_dir": "/a /b", "--workers": "1"}


def test_qwen_converter_weight_only_precisions_are_exactly_as_read() -> None:
    flag = tools.TOOL_FLAGS[tools.CONVERT_QWEN]["--weight_only_precision"]
    assert flag.choices == ("int8", "int4", "int4_gptq", "int8_gptq")
    llama = tools.TOOL_FLAGS[tools.CONVERT_LLAMA]["--weight_only_precision"]
    assert llama.choices == ("int8", "int4", "int8_gptq", "int4_gptq", "int4_awq")
