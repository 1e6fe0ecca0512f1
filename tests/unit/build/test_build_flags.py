"""The 1.2.1 flag tables reject what the real tools would reject."""

from __future__ import annotations

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
