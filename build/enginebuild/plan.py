"""Turn one build target into the ordered steps (with exact commands) that produce its engine."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from enginebuild import flags as tools
from enginebuild.sizing import Sizing
from enginebuild.targets import Target

# quantize.py --qformat for each weight precision; full_prec keeps BF16 weights.
QFORMAT = {"fp8": "fp8", "int8_wo": "int8_wo", "int4_awq": "int4_awq", "bf16": "full_prec"}
# quantize.py --kv_cache_dtype for each KV precision; BF16 means "leave it unset".
KV_DTYPE = {"fp8": "fp8", "int8": "int8", "bf16": None}
# ModelOpt calibration sizes from the TRT-LLM READMEs; quantize.py caps AWQ at 32 anyway.
CALIB_SIZE = {"int4_awq": 32}
DEFAULT_CALIB_SIZE = 512
CALIB_MAX_SEQ_LEN = 512
# Calibration must never reach for the Hugging Face hub (offline builders, reproducibility).
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
CALIB_PLACEHOLDER = Path("<CALIBRATION_FILE>")


@dataclass(frozen=True)
class BuildPaths:
    """Where one build reads and writes. The engine is built into `staging_dir` and moved to
    `engine_dir` only after it verified, so a failed build never replaces a working engine."""

    checkpoint: Path
    out_root: Path
    engine_dir: Path
    staging_dir: Path
    work_dir: Path
    calib_data: Path | None

    @classmethod
    def for_target(
        cls, target: Target, *, checkpoint: Path, out_root: Path, calib_data: Path | None
    ) -> BuildPaths:
        model_dir = out_root / target.model.slug
        return cls(
            checkpoint=checkpoint,
            out_root=out_root,
            engine_dir=model_dir / target.gpu.key,
            # Dot-prefixed so select_engine and `engines list` skip it.
            staging_dir=model_dir / f".{target.gpu.key}.building",
            work_dir=out_root / ".work" / target.model.slug / target.gpu.key,
            calib_data=calib_data,
        )

    @property
    def calib_dir(self) -> Path:
        return self.work_dir / "calib"

    @property
    def trtllm_checkpoint(self) -> Path:
        return self.work_dir / "tllm-checkpoint"


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    # None: the builder does this step in-process (no external tool involved).
    argv: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def shell(self) -> str:
        """The command as one copy-pasteable shell line."""
        if self.argv is None:
            return "(in-process)"
        prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in self.env.items())
        return prefix + shlex.join(self.argv)


def make_plan(target: Target, paths: BuildPaths, *, python: str = sys.executable) -> list[Step]:
    steps: list[Step] = []
    if target.needs_calibration:
        source = paths.calib_data or CALIB_PLACEHOLDER
        steps.append(
            Step(
                "calibration-data",
                f"turn {source} into the local dataset directory quantize.py loads offline",
                (python, "-m", "enginebuild.calib", "--input", str(source),
                 "--output", str(paths.calib_dir)),
            )
        )  # fmt: skip
        steps.append(_quantize_step(target, paths))
    else:
        steps.append(_convert_step(target, paths))
    steps.append(
        Step(
            "trtllm-build",
            f"compile the {target.gpu.key} engine ({target.precision.weights} weights, "
            f"{target.precision.kv_cache} KV cache)",
            trtllm_build_argv(target, paths),
        )
    )
    steps.append(
        Step(
            "manifest",
            "hash the checkpoint and tokenizer files and write tensorchat-manifest.json (GPU, "
            "compute capability, TensorRT(-LLM) versions, precision, limits, flags)",
        )
    )
    steps.append(
        Step(
            "verify",
            "static checks, then on the GPU: load, smoke prompt, greedy parity with torch",
            (python, "-m", "enginebuild", "verify", str(paths.staging_dir),
             "--checkpoint", str(paths.checkpoint)),
        )
    )  # fmt: skip
    steps.append(
        Step("install", f"move the verified engine to {paths.engine_dir} (replacing the old one)")
    )
    return steps


def _quantize_step(target: Target, paths: BuildPaths) -> Step:
    weights, kv = target.precision.weights, target.precision.kv_cache
    argv = [
        tools.QUANTIZE,
        "--model_dir", str(paths.checkpoint),
        "--output_dir", str(paths.trtllm_checkpoint),
        "--dtype", "bfloat16",
        "--qformat", QFORMAT[weights],
    ]  # fmt: skip
    kv_dtype = KV_DTYPE[kv]
    if kv_dtype is not None:
        argv += ["--kv_cache_dtype", kv_dtype]
    argv += [
        "--calib_dataset", str(paths.calib_dir),
        "--calib_size", str(CALIB_SIZE.get(weights, DEFAULT_CALIB_SIZE)),
        "--calib_max_seq_length", str(CALIB_MAX_SEQ_LEN),
        "--batch_size", "1",
    ]  # fmt: skip
    if weights == "int4_awq":
        argv += ["--awq_block_size", "128"]
    argv += ["--tp_size", "1", "--pp_size", "1", "--seed", "1234", "--device", "cuda"]
    return Step(
        "quantize",
        f"ModelOpt PTQ to {weights} weights / {kv} KV cache -> TensorRT-LLM checkpoint",
        tuple(argv),
        dict(OFFLINE_ENV),
    )


def _convert_step(target: Target, paths: BuildPaths) -> Step:
    tool = tools.CONVERT_LLAMA if target.model.converter == "llama" else tools.CONVERT_QWEN
    argv = (
        tool,
        "--model_dir", str(paths.checkpoint),
        "--output_dir", str(paths.trtllm_checkpoint),
        "--dtype", "bfloat16",
        "--tp_size", "1",
        "--pp_size", "1",
        "--workers", "1",
    )  # fmt: skip
    return Step("convert", "convert the HF checkpoint to a BF16 TensorRT-LLM checkpoint", argv)


def trtllm_build_argv(target: Target, paths: BuildPaths) -> tuple[str, ...]:
    lim = target.limits
    argv = [
        tools.TRTLLM_BUILD,
        "--checkpoint_dir", str(paths.trtllm_checkpoint),
        "--output_dir", str(paths.staging_dir),
        "--max_batch_size", str(lim.max_batch_size),
        "--max_input_len", str(lim.max_input_len),
        "--max_seq_len", str(lim.max_seq_len),
        "--max_num_tokens", str(lim.max_num_tokens),
    ]  # fmt: skip
    for name, value in target.flags.items():
        argv += [name, value]
    return tuple(argv)


def recorded_build_flags(argv: Sequence[str]) -> dict[str, str]:
    """The trtllm-build flags worth recording in the manifest: everything except paths."""
    parsed, _ = tools.parse_flags(argv[1:], tools.TRTLLM_BUILD_FLAGS)
    return {k: v for k, v in parsed.items() if k not in ("--checkpoint_dir", "--output_dir")}


def format_plan(target: Target, steps: Sequence[Step], sizing: Sizing) -> str:
    lim, p = target.limits, target.precision
    lines = [
        f"Engine build plan: {target.model.id} on {target.gpu.key} "
        f"({target.gpu.name}, compute capability {target.gpu.compute_capability})",
        f"  precision: {p.weights} weights, {p.kv_cache} KV cache",
        f"  limits: max_batch_size={lim.max_batch_size} max_input_len={lim.max_input_len} "
        f"max_seq_len={lim.max_seq_len} max_num_tokens={lim.max_num_tokens}",
        f"  sizing: {sizing.describe()}",
        "",
    ]
    for i, step in enumerate(steps, 1):
        lines.append(f"{i}. {step.name}: {step.description}")
        lines.append(f"   $ {step.shell()}")
    used = {s.argv[0] for s in steps if s.argv and s.argv[0] in tools.TOOL_SCRIPTS}
    if used:
        lines.append("")
        lines.append("Wrappers installed by build/Dockerfile (TensorRT-LLM v1.2.1 examples):")
        for tool in sorted(used):
            lines.append(f"  {tool} = python3 $TRTLLM_SRC/{tools.TOOL_SCRIPTS[tool]}")
    return "\n".join(lines)
