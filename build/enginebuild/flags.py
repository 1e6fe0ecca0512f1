"""The TensorRT-LLM 1.2.1 command-line flags we may pass, with their allowed values, and a checker.

Every command the planner emits is validated against these tables, so a typo or a value the
pinned release would reject fails in a unit test instead of an hour into a GPU build.

Sources (NVIDIA/TensorRT-LLM, release/1.2 era; see /work/shared/reference/tensorrt-llm.md §3):
- `tensorrt_llm/commands/build.py` `parse_arguments()` (trtllm-build),
- `tensorrt_llm/plugin/plugin.py` `PluginConfig`, `cli_plugin_args`, `PLUGIN_DTYPE_OPTIONS_MAP`
  (plugin flags: dtype strings or "disable"; feature flags take an explicit "enable"/"disable",
  there is no bare `--multiple_profiles`),
- `examples/quantization/quantize.py` (ModelOpt quantization),
- `examples/models/core/llama/convert_checkpoint.py` (Mistral uses the Llama converter) and
  `examples/models/core/qwen/convert_checkpoint.py`.
Only the flags tensorchat has a use for are listed, plus their closest neighbours; anything not
listed is rejected on purpose.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class Kind(enum.Enum):
    INT = "int"
    FLOAT = "float"
    PATH = "path"
    CHOICE = "choice"
    SWITCH = "switch"  # store_true: takes no value


@dataclass(frozen=True)
class Flag:
    kind: Kind
    choices: tuple[str, ...] = ()
    # Accepted by the release but deprecated there: our plans must not use it.
    deprecated: str = ""


def _choice(*values: str) -> Flag:
    return Flag(Kind.CHOICE, values)


_INT = Flag(Kind.INT)
_FLOAT = Flag(Kind.FLOAT)
_PATH = Flag(Kind.PATH)
_SWITCH = Flag(Kind.SWITCH)
_ON_OFF = _choice("enable", "disable")
# plugin.py DEFAULT_PLUGIN_DTYPE_OPTIONS, with None spelled "disable" on the command line.
_PLUGIN_DTYPE = _choice("auto", "float16", "float32", "bfloat16", "int32", "disable")

TRTLLM_BUILD_FLAGS: Mapping[str, Flag] = {
    "--checkpoint_dir": _PATH,
    "--output_dir": _PATH,
    "--max_batch_size": _INT,
    "--max_input_len": _INT,
    "--max_seq_len": _INT,
    "--max_beam_width": _INT,
    "--max_num_tokens": _INT,
    "--opt_num_tokens": _INT,
    "--kv_cache_type": _choice("continuous", "paged", "disabled"),
    "--paged_kv_cache": Flag(Kind.CHOICE, ("enable", "disable"), "use --kv_cache_type paged"),
    "--input_timing_cache": _PATH,
    "--output_timing_cache": _PATH,
    "--profiling_verbosity": _choice("layer_names_only", "detailed", "none"),
    "--strip_plan": _SWITCH,
    "--weight_sparsity": _SWITCH,
    "--weight_streaming": _SWITCH,
    "--fast_build": _SWITCH,
    "--workers": _INT,
    "--log_level": _choice("internal_error", "error", "warning", "info", "verbose", "debug"),
    "--monitor_memory": _SWITCH,
    "--dry_run": _SWITCH,
    "--logits_dtype": _choice("float16", "float32"),
    "--gather_context_logits": _SWITCH,
    "--gather_generation_logits": _SWITCH,
    "--gather_all_token_logits": _SWITCH,
    "--max_draft_len": _INT,
    "--speculative_decoding_mode": _choice(
        "draft_tokens_external", "lookahead_decoding", "medusa", "explicit_draft_tokens", "eagle"
    ),
    # Plugins (plugin.py cli_plugin_args; dtype or "disable").
    "--gpt_attention_plugin": _PLUGIN_DTYPE,
    "--gemm_plugin": _choice(
        "auto", "float16", "float32", "bfloat16", "int32", "fp8", "nvfp4", "disable"
    ),
    "--gemm_swiglu_plugin": _choice("fp8", "disable"),
    "--low_latency_gemm_plugin": _choice("fp8", "disable"),
    "--low_latency_gemm_swiglu_plugin": _choice("fp8", "disable"),
    "--fp8_rowwise_gemm_plugin": _PLUGIN_DTYPE,
    "--nccl_plugin": _PLUGIN_DTYPE,
    "--lora_plugin": _PLUGIN_DTYPE,
    "--moe_plugin": _PLUGIN_DTYPE,
    "--gemm_allreduce_plugin": _choice("float16", "bfloat16", "disable"),
    # Features (bool fields: explicit enable/disable).
    "--context_fmha": _ON_OFF,
    "--remove_input_padding": _ON_OFF,
    "--use_paged_context_fmha": _ON_OFF,
    "--use_fp8_context_fmha": _ON_OFF,
    "--multiple_profiles": _ON_OFF,
    "--paged_state": _ON_OFF,
    "--norm_quant_fusion": _ON_OFF,
    "--reduce_fusion": _ON_OFF,
    "--user_buffer": _ON_OFF,
    "--use_fused_mlp": _ON_OFF,
    "--tokens_per_block": _INT,
}

QUANTIZE_FLAGS: Mapping[str, Flag] = {
    "--model_dir": _PATH,
    "--output_dir": _PATH,
    "--device": _choice("cuda", "cpu"),
    "--device_map": _choice("auto", "sequential", "cpu", "gpu"),
    "--calib_dataset": _PATH,  # an HF dataset name or a local dataset *directory*
    "--dtype": _choice("auto", "float16", "bfloat16", "float32"),
    "--qformat": _choice(
        "nvfp4", "fp8", "int8_sq", "int4_awq", "w4a8_awq", "int8_wo", "int4_wo", "full_prec"
    ),
    "--kv_cache_dtype": _choice("int8", "fp8"),
    "--seed": _INT,
    "--tokenizer_max_seq_length": _INT,
    "--batch_size": _INT,
    "--calib_size": _INT,
    "--calib_max_seq_length": _INT,
    "--tp_size": _INT,
    "--pp_size": _INT,
    "--awq_block_size": _INT,
    "--quantize_lm_head": _SWITCH,
    "--export_format": _choice("tensorrt_llm", "hf"),
}

_CONVERT_COMMON: Mapping[str, Flag] = {
    "--model_dir": _PATH,
    "--output_dir": _PATH,
    "--tp_size": _INT,
    "--pp_size": _INT,
    "--dtype": _choice("auto", "float16", "bfloat16", "float32"),
    "--use_weight_only": _SWITCH,
    "--int8_kv_cache": _SWITCH,
    "--calib_dataset": _PATH,
    "--workers": _INT,
    "--load_model_on_cpu": _SWITCH,
    "--use_parallel_embedding": _SWITCH,
}

CONVERT_LLAMA_FLAGS: Mapping[str, Flag] = {
    **_CONVERT_COMMON,
    "--weight_only_precision": _choice("int8", "int4", "int8_gptq", "int4_gptq", "int4_awq"),
    "--fp8_kv_cache": _SWITCH,
    "--load_by_shard": _SWITCH,
}

CONVERT_QWEN_FLAGS: Mapping[str, Flag] = {
    **_CONVERT_COMMON,
    "--weight_only_precision": _choice("int8", "int4", "int4_gptq", "int8_gptq"),
}

# The executables the plan calls, each with its flag table. The builder image puts the three
# example-script wrappers on PATH (see build/Dockerfile); trtllm-build is the wheel's own script.
TRTLLM_BUILD = "trtllm-build"
QUANTIZE = "tensorchat-quantize"
CONVERT_LLAMA = "tensorchat-convert-llama"
CONVERT_QWEN = "tensorchat-convert-qwen"

TOOL_FLAGS: Mapping[str, Mapping[str, Flag]] = {
    TRTLLM_BUILD: TRTLLM_BUILD_FLAGS,
    QUANTIZE: QUANTIZE_FLAGS,
    CONVERT_LLAMA: CONVERT_LLAMA_FLAGS,
    CONVERT_QWEN: CONVERT_QWEN_FLAGS,
}

# What each wrapper runs inside the builder image (examples pinned to the v1.2.1 tag).
TOOL_SCRIPTS: Mapping[str, str] = {
    QUANTIZE: "examples/quantization/quantize.py",
    CONVERT_LLAMA: "examples/models/core/llama/convert_checkpoint.py",
    CONVERT_QWEN: "examples/models/core/qwen/convert_checkpoint.py",
}


def parse_flags(args: Sequence[str], table: Mapping[str, Flag]) -> tuple[dict[str, str], list[str]]:
    """Split `--flag value` / `--switch` args using the table; returns (flags, problems).

    Switches map to "" in the result. Every problem names the flag and what is wrong.
    """
    flags: dict[str, str] = {}
    problems: list[str] = []
    i = 0
    while i < len(args):
        name = args[i]
        spec = table.get(name)
        if spec is None:
            problems.append(f"{name}: not a flag of this tool in TensorRT-LLM 1.2.1")
            i += 1
            continue
        if name in flags:
            problems.append(f"{name}: given twice")
        if spec.deprecated:
            problems.append(f"{name}: deprecated in 1.2.1 ({spec.deprecated})")
        if spec.kind is Kind.SWITCH:
            flags[name] = ""
            i += 1
            continue
        if i + 1 >= len(args) or args[i + 1].startswith("--"):
            problems.append(f"{name}: needs a value")
            i += 1
            continue
        value = args[i + 1]
        problems.extend(_check_value(name, spec, value))
        flags[name] = value
        i += 2
    return flags, problems


def _check_value(name: str, spec: Flag, value: str) -> list[str]:
    if spec.kind is Kind.CHOICE and value not in spec.choices:
        return [f"{name}: {value!r} is not one of {', '.join(spec.choices)}"]
    if spec.kind is Kind.INT:
        try:
            number = int(value)
        except ValueError:
            return [f"{name}: {value!r} is not an integer"]
        if number <= 0:
            return [f"{name}: {value} must be positive"]
    if spec.kind is Kind.FLOAT:
        try:
            float(value)
        except ValueError:
            return [f"{name}: {value!r} is not a number"]
    if spec.kind is Kind.PATH and not value:
        return [f"{name}: empty path"]
    return []


def validate_command(argv: Sequence[str]) -> list[str]:
    """Problems with one planned command line (tool name first); empty when valid for 1.2.1."""
    if not argv:
        return ["empty command"]
    table = TOOL_FLAGS.get(argv[0])
    if table is None:
        return [f"{argv[0]}: not a TensorRT-LLM tool this pipeline knows"]
    return parse_flags(argv[1:], table)[1]
