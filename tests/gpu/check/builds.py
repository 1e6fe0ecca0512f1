"""The tiny engines: a build matrix for the tiny checkpoints, and `enginebuild build` runs.

The real pipeline builds them (`python -m enginebuild build --targets <tiny matrix>`, the same
code as `tensorchat engines build`): convert_checkpoint.py of the llama / qwen example,
trtllm-build, the manifest, the pipeline's own verify, the install. Only the matrix differs:
the tiny models, tiny limits, and the trtllm-build flags of the real matrix's BF16 recipe (the
one that needs no calibration), so those flags get built and served on every GPU check.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from enginebuild import flags as tools
from enginebuild.plan import BuildPaths, Step, make_plan
from enginebuild.targets import Matrix, load_matrix, targets_file
from inference.engines.manifest import Limits

REPO_ROOT = Path(__file__).resolve().parents[3]
# Room for the check's prompts (at most 40 tokens) and completions; powers of two as the
# matrix rules want. tests/gpu/test_trtllm_gpu.py builds its FP32 engines with them too.
TINY_LIMITS = Limits(max_batch_size=8, max_input_len=128, max_seq_len=256, max_num_tokens=512)
TINY_RECIPE = "bf16"
# Lines of a failed build's log repeated in its FAIL line.
LOG_TAIL_LINES = 3


@dataclass(frozen=True)
class TinyModel:
    name: str  # "mistral" or "qwen2"
    converter: str  # which convert_checkpoint.py example handles it: "llama" or "qwen"
    checkpoint: Path

    @property
    def id(self) -> str:
        return f"tiny/{self.name}"


def model_spec(model: TinyModel) -> dict[str, Any]:
    """The matrix's `models:` entry for a tiny checkpoint, read from its config and weights."""
    config = json.loads((model.checkpoint / "config.json").read_text())
    hidden, vocab = int(config["hidden_size"]), int(config["vocab_size"])
    return {
        "converter": model.converter,
        "num_layers": int(config["num_hidden_layers"]),
        "num_kv_heads": int(config["num_key_value_heads"]),
        "head_dim": int(config.get("head_dim") or hidden // int(config["num_attention_heads"])),
        "hidden_size": hidden,
        "vocab_size": vocab,
        "max_position_embeddings": int(config["max_position_embeddings"]),
        "params": _parameter_count(model.checkpoint),
        "unquantized_params": 2 * vocab * hidden,  # embedding and the untied lm_head
    }


def _parameter_count(checkpoint: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(path), framework="numpy") as weights:
            names = weights.keys()  # safe_open is not iterable itself
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    return total


def bf16_recipe_flags(matrix: Matrix) -> Mapping[str, str]:
    """The trtllm-build flags of the matrix's BF16 recipe (BF16 weights and KV cache)."""
    for target in matrix.targets:
        if not target.needs_calibration:
            return target.flags
    raise ValueError("the build matrix has no BF16 target (one that needs no calibration)")


def write_tiny_matrix(models: Sequence[TinyModel], dest: Path, source: Path | None = None) -> Path:
    """A matrix file with the tiny models on every GPU of the real matrix (`source`)."""
    raw = yaml.safe_load(targets_file(source).read_text())
    flags = dict(bf16_recipe_flags(load_matrix(source)))
    data = {
        "tensorrt_llm_version": raw["tensorrt_llm_version"],
        "tensorrt_version": raw["tensorrt_version"],
        "sizing": raw["sizing"],
        "models": {model.id: model_spec(model) for model in models},
        "gpus": raw["gpus"],
        "flag_sets": {TINY_RECIPE: flags},
        "targets": [
            {
                "gpu": gpu,
                "models": [model.id for model in models],
                "weights": "bf16",
                "kv_cache": "bf16",
                "limits": asdict(TINY_LIMITS),
                "flags": [TINY_RECIPE],
            }
            for gpu in raw["gpus"]
        ],
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(
        "# Written by scripts/gpu-check: the tiny test checkpoints with the BF16 recipe.\n"
        + yaml.safe_dump(data, sort_keys=False)
    )
    return dest


def build_paths(matrix: Matrix, model: TinyModel, gpu_key: str, out_root: Path) -> BuildPaths:
    target = matrix.target(model.id, gpu_key)
    return BuildPaths.for_target(
        target, checkpoint=model.checkpoint, out_root=out_root, calib_data=None
    )


def planned_steps(matrix: Matrix, model: TinyModel, gpu_key: str, out_root: Path) -> list[Step]:
    """What `engines build` runs for this model on this GPU type."""
    target = matrix.target(model.id, gpu_key)
    return make_plan(target, build_paths(matrix, model, gpu_key, out_root))


def tool_problems(steps: Sequence[Step]) -> list[str]:
    """Problems of the TensorRT-LLM tool commands of a plan, per the 1.2.1 flag tables."""
    return [
        f"{step.name}: {problem}"
        for step in steps
        if step.argv is not None and step.argv[0] in tools.TOOL_FLAGS
        for problem in tools.validate_command(step.argv)
    ]


def build_argv(model: TinyModel, matrix_file: Path, out_root: Path) -> list[str]:
    """`engines build` for one tiny model on this machine's GPU."""
    return [
        sys.executable, "-m", "enginebuild", "build",
        "--targets", str(matrix_file),
        "--model", model.id,
        "--gpu", "auto",
        "--checkpoint", str(model.checkpoint),
        "--out", str(out_root),
        "--force",
    ]  # fmt: skip


def pipeline_env() -> dict[str, str]:
    """The environment a build subprocess needs to import this checkout's packages."""
    paths = [str(REPO_ROOT), str(REPO_ROOT / "build")]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


@dataclass(frozen=True)
class BuildOutcome:
    ok: bool
    detail: str


def run_builds(
    commands: Mapping[str, Sequence[str]], logs: Path, timeout_s: float
) -> dict[str, BuildOutcome]:
    """Run the builds side by side (one GPU holds both tiny builds); each logs to a file.

    A build still running at the deadline is killed and fails.
    """
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, argv in commands.items():
        log = logs / f"build-{name.replace('/', '-')}.log"
        with log.open("wb") as sink:
            running[name] = (
                subprocess.Popen(
                    list(argv), stdout=sink, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, env=pipeline_env(),
                ),
                log,
            )  # fmt: skip
    outcomes: dict[str, BuildOutcome] = {}
    for name, (proc, log) in running.items():
        left = max(0.0, timeout_s - (time.monotonic() - started))
        try:
            code = proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            outcomes[name] = BuildOutcome(False, f"timed out after {timeout_s:.0f}s; log {log}")
            continue
        elapsed = time.monotonic() - started
        if code == 0:
            outcomes[name] = BuildOutcome(True, f"built and verified in {elapsed:.0f}s")
        else:
            outcomes[name] = BuildOutcome(
                False, f"exit status {code}: {' | '.join(log_tail(log))}; log {log}"
            )
    return outcomes


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    with log.open(errors="replace") as text:
        return [line.rstrip() for line in deque(text, maxlen=lines)]
