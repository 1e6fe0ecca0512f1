"""What the stand-in TensorRT-LLM tools of conftest.py write, as the 1.2.1 tools do.

quantize.py / convert_checkpoint.py write a TensorRT-LLM checkpoint whose config.json names the
architecture and the quantization (QuantAlgo names); trtllm-build reads that config, applies its
own checks and overrides (enginebuild.build_rules, from trtllm_1_2_1_rules.yaml: refusals exit
non-zero with the release's exception and message, overrides log its warning), and writes the
engine's config.json with the plugin_config it really built (builder.py Engine.save(): pydantic
PluginConfig dump, features true/false, disabled plugins null).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from enginebuild.build_rules import BuildFacts, apply_rules, sm_of
from enginebuild.flags import TRTLLM_BUILD_FLAGS, Kind, parse_flags

# quantize.py --qformat / --kv_cache_dtype -> the QuantAlgo ModelOpt's export writes.
QFORMAT_ALGO = {"fp8": "FP8", "int8_wo": "W8A16", "int4_awq": "W4A16_AWQ", "full_prec": None}
KV_DTYPE_ALGO = {"fp8": "FP8", "int8": "INT8", None: None}
# HF architectures -> TensorRT-LLM's (Mistral is converted by the llama code).
ARCHITECTURES = {"MistralForCausalLM": "LlamaForCausalLM", "LlamaForCausalLM": "LlamaForCausalLM"}


def _value(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def write_checkpoint(tool: str, args: list[str], out: Path) -> None:
    hf_config = json.loads((Path(_value(args, "--model_dir") or ".") / "config.json").read_text())
    hf_arch = hf_config.get("architectures", ["LlamaForCausalLM"])[0]
    quantization: dict[str, str | None] = {"quant_algo": None, "kv_cache_quant_algo": None}
    if tool == "tensorchat-quantize":
        quantization = {
            "quant_algo": QFORMAT_ALGO[_value(args, "--qformat") or "full_prec"],
            "kv_cache_quant_algo": KV_DTYPE_ALGO[_value(args, "--kv_cache_dtype")],
        }
    config = {
        "architecture": ARCHITECTURES.get(hf_arch, hf_arch),
        "quantization": quantization,
        "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1},
    }
    (out / "config.json").write_text(json.dumps(config))
    (out / "rank0.safetensors").write_bytes(b"weights stand-in")


def _plugin_config(flags: Mapping[str, str]) -> dict[str, object]:
    dump: dict[str, object] = {}
    for name, flag in TRTLLM_BUILD_FLAGS.items():
        if not flag.plugin or name not in flags:
            continue
        value = flags[name]
        if flag.kind is Kind.INT:
            dump[name[2:]] = int(value)
        elif flag.choices == ("enable", "disable"):
            dump[name[2:]] = value == "enable"
        else:
            dump[name[2:]] = None if value == "disable" else value
    return dump


def trtllm_build(args: list[str], checkpoint: Path, out: Path, gpu: str) -> int:
    """Behave as trtllm-build 1.2.1 on `gpu` ("name, compute capability"); the exit status."""
    given, problems = parse_flags(args, TRTLLM_BUILD_FLAGS)
    if problems:
        print(f"trtllm-build: error: {problems[0]}", flush=True)
        return 2  # argparse's exit status
    ckpt = json.loads((checkpoint / "config.json").read_text())
    facts = BuildFacts(
        quant_algo=ckpt["quantization"]["quant_algo"],
        kv_cache_quant_algo=ckpt["quantization"]["kv_cache_quant_algo"],
        sm=sm_of(gpu.rsplit(",", 1)[1].strip()),
        architecture=ckpt["architecture"],
        tp_size=int(ckpt["mapping"]["tp_size"]),
    )
    outcome = apply_rules(given, facts)
    if outcome.refusals:
        refusal = outcome.refusals[0]
        print(f"{refusal.rule.refuse}: {refusal.message}", flush=True)
        return 1
    for override in outcome.overrides:
        print(f"[TRT-LLM] [W] {override.rule.message}", flush=True)
    limits = ("--max_batch_size", "--max_input_len", "--max_seq_len", "--max_num_tokens")
    build: dict[str, object] = {name[2:]: int(given[name]) for name in limits if name in given}
    build["plugin_config"] = _plugin_config(outcome.flags)
    config = {
        "version": os.environ.get("STANDIN_TRTLLM_VERSION", "1.2.1"),
        "pretrained_config": {"architecture": facts.architecture, "mapping": ckpt["mapping"]},
        "build_config": build,
    }
    (out / "config.json").write_text(json.dumps(config))
    (out / "rank0.engine").write_bytes(b"serialized engine stand-in")
    print("[TRT-LLM] [I] Engine built stand-in", flush=True)
    return 0
