"""The build matrix: load build/targets.yaml into typed targets and check each one's recipe."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from enginebuild.build_rules import (
    ARCHITECTURE,
    KV_CACHE_QUANT_ALGO,
    WEIGHT_QUANT_ALGO,
    BuildFacts,
    Outcome,
    apply_rules,
    sm_of,
)
from inference.engines.manifest import Limits, Precision, model_slug

# build/targets.yaml next to this package; TENSORCHAT_TARGETS or --targets point elsewhere.
DEFAULT_TARGETS_FILE = Path(__file__).resolve().parent.parent / "targets.yaml"

WEIGHT_PRECISIONS = ("fp8", "bf16", "int8_wo", "int4_awq")
KV_PRECISIONS = ("fp8", "int8", "bf16")
# FP8 tensor cores exist from Ada (sm89) on; this matrix has no Blackwell parts.
FP8_COMPUTE_CAPABILITIES = frozenset({"8.9", "9.0"})
HOPPER_ONLY_FLAGS = ("--gemm_swiglu_plugin", "--low_latency_gemm_plugin")


class TargetError(ValueError):
    """The matrix file is malformed or names an unknown model / GPU."""


@dataclass(frozen=True)
class ModelSpec:
    id: str
    converter: str  # "llama" or "qwen": which convert_checkpoint.py handles it
    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_position_embeddings: int
    params: int
    unquantized_params: int  # kept in BF16 by ModelOpt (embedding, lm_head)

    @property
    def slug(self) -> str:
        return model_slug(self.id)


@dataclass(frozen=True)
class GpuSpec:
    key: str
    name: str
    product: str
    compute_capability: str
    memory_mib: int
    runner_label: str

    @property
    def has_fp8(self) -> bool:
        return self.compute_capability in FP8_COMPUTE_CAPABILITIES


@dataclass(frozen=True)
class SizingPolicy:
    runtime_overhead_gib: float
    kv_cache_free_fraction: float
    min_full_length_sequences: int
    typical_request_tokens: int


@dataclass(frozen=True)
class Target:
    model: ModelSpec
    gpu: GpuSpec
    precision: Precision
    limits: Limits
    # trtllm-build flags other than paths and limits, in the order they are passed.
    flags: Mapping[str, str]

    @property
    def name(self) -> str:
        return f"{self.model.id} on {self.gpu.key}"

    def build_facts(self) -> BuildFacts:
        """What trtllm-build will know when it builds this target on its own GPU."""
        return BuildFacts(
            quant_algo=WEIGHT_QUANT_ALGO.get(self.precision.weights),
            kv_cache_quant_algo=KV_CACHE_QUANT_ALGO.get(self.precision.kv_cache),
            sm=sm_of(self.gpu.compute_capability),
            architecture=ARCHITECTURE[self.model.converter],
        )

    def release_outcome(self) -> Outcome:
        """What trtllm-build 1.2.1 does with this target's flags (build_rules)."""
        return apply_rules(self.flags, self.build_facts())

    @property
    def needs_calibration(self) -> bool:
        """Whether the recipe quantizes anything, so needs calibration text (ModelOpt)."""
        return self.precision.weights != "bf16" or self.precision.kv_cache != "bf16"


@dataclass(frozen=True)
class Matrix:
    tensorrt_llm_version: str
    tensorrt_version: str
    sizing: SizingPolicy
    models: Mapping[str, ModelSpec]
    gpus: Mapping[str, GpuSpec]
    targets: tuple[Target, ...]

    def model(self, model_id: str) -> ModelSpec:
        """Look a model up case-insensitively (clients send either spelling)."""
        for spec in self.models.values():
            if spec.id.casefold() == model_id.casefold():
                return spec
        raise TargetError(f"unknown model {model_id!r}; known: {', '.join(self.models)}")

    def gpu(self, key: str) -> GpuSpec:
        spec = self.gpus.get(key.lower())
        if spec is None:
            raise TargetError(f"unknown GPU {key!r}; known: {', '.join(self.gpus)}")
        return spec

    def target(self, model_id: str, gpu_key: str) -> Target:
        model, gpu = self.model(model_id), self.gpu(gpu_key)
        for target in self.targets:
            if target.model == model and target.gpu == gpu:
                return target
        raise TargetError(f"no target for {model.id} on {gpu.key} in the matrix")


def targets_file(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("TENSORCHAT_TARGETS")
    return Path(env) if env else DEFAULT_TARGETS_FILE


def load_matrix(path: Path | None = None) -> Matrix:
    """Parse the matrix file; raises TargetError naming the file and the bad entry."""
    path = targets_file(path)
    try:
        raw = yaml.safe_load(path.read_text())
        return _parse(raw)
    except OSError as exc:
        raise TargetError(f"cannot read build matrix {path}: {exc}") from exc
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise TargetError(f"build matrix {path} is malformed: {exc!r}") from exc


def _parse(raw: Mapping[str, Any]) -> Matrix:
    models = {model_id: ModelSpec(id=model_id, **spec) for model_id, spec in raw["models"].items()}
    gpus = {
        key: GpuSpec(
            key=key,
            name=str(g["name"]),
            product=str(g["product"]),
            # Quoted in the YAML: an unquoted 8.0 would load as a float.
            compute_capability=str(g["compute_capability"]),
            memory_mib=int(g["memory_mib"]),
            runner_label=str(g["runner_label"]),
        )
        for key, g in raw["gpus"].items()
    }
    flag_sets: Mapping[str, Mapping[str, Any]] = raw["flag_sets"]
    targets: list[Target] = []
    for entry in raw["targets"]:
        gpu = gpus[entry["gpu"]]
        flags: dict[str, str] = {}
        for set_name in entry["flags"]:
            flags.update({k: str(v) for k, v in flag_sets[set_name].items()})
        limits = Limits(**{k: int(v) for k, v in entry["limits"].items()})
        precision = Precision(weights=entry["weights"], kv_cache=entry["kv_cache"])
        for model_id in entry["models"]:
            targets.append(Target(models[model_id], gpu, precision, limits, flags))
    seen: set[tuple[str, str]] = set()
    for t in targets:
        if (t.model.id, t.gpu.key) in seen:
            raise ValueError(f"{t.name} is listed twice")
        seen.add((t.model.id, t.gpu.key))
    return Matrix(
        tensorrt_llm_version=str(raw["tensorrt_llm_version"]),
        tensorrt_version=str(raw["tensorrt_version"]),
        sizing=SizingPolicy(**raw["sizing"]),
        models=models,
        gpus=gpus,
        targets=tuple(targets),
    )


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


# Where our own rules come from; the release's rules name their source in trtllm_1_2_1_rules.yaml.
OUR_RULE = "tensorchat recipe rule, enginebuild/targets.py"


@dataclass(frozen=True)
class RecipeReview:
    """A target's recipe findings, each ending with its rule's source in brackets.

    `refusals`: the build cannot give what the target says. The pipeline cannot build it,
    trtllm-build 1.2.1 refuses it or silently builds other flags (so the manifest would lie),
    or the executor cannot serve it. `engines build` refuses these before any GPU time.
    `advice`: it builds and serves correctly, only not as well as the matrix wants (a GPU's
    FP8 left unused, limits off the tuning grid). `engines build` prints them as warnings; the
    production matrix (build/targets.yaml) has none, the GPU check's tiny BF16 matrix has some.
    """

    refusals: tuple[str, ...]
    advice: tuple[str, ...]


def _ours(problem: str, why: str) -> str:
    return f"{problem} [{OUR_RULE}: {why}]"


def review_recipe(target: Target) -> RecipeReview:
    """Precision, limit and flag rules of a target, split into refusals and advice."""
    refusals: list[str] = []
    advice: list[str] = []
    gpu, p, lim, flags = target.gpu, target.precision, target.limits, target.flags
    if p.weights not in WEIGHT_PRECISIONS:
        refusals.append(
            _ours(
                f"weights {p.weights!r} not one of {WEIGHT_PRECISIONS}",
                "the precisions plan.py builds",
            )
        )
    if p.kv_cache not in KV_PRECISIONS:
        refusals.append(
            _ours(
                f"kv_cache {p.kv_cache!r} not one of {KV_PRECISIONS}",
                "the precisions plan.py builds",
            )
        )
    if "fp8" in (p.weights, p.kv_cache) and not gpu.has_fp8:
        refusals.append(
            _ours(f"FP8 on {gpu.key} (sm{gpu.compute_capability})", "FP8 needs sm89/sm90")
        )
    if lim.max_input_len >= lim.max_seq_len:
        refusals.append(
            _ours(
                f"max_input_len {lim.max_input_len} >= max_seq_len {lim.max_seq_len}",
                "no room for a generated token",
            )
        )
    if lim.max_seq_len > target.model.max_position_embeddings:
        refusals.append(
            _ours(
                f"max_seq_len {lim.max_seq_len} exceeds the model's "
                f"{target.model.max_position_embeddings} positions",
                "the engine would hold sequences the model was not trained for",
            )
        )
    for name in HOPPER_ONLY_FLAGS:
        if flags.get(name, "disable") != "disable" and gpu.compute_capability != "9.0":
            refusals.append(
                _ours(
                    f"{name} is Hopper-only but the target is {gpu.key}",
                    "its kernels exist for sm90 only",
                )
            )
    if flags.get("--gemm_plugin") == "fp8" and p.weights != "fp8":
        refusals.append(
            _ours("--gemm_plugin fp8 without FP8 weights", "an FP8 GEMM needs FP8 weights")
        )
    if flags.get("--kv_cache_type") != "paged":
        refusals.append(
            _ours(
                "--kv_cache_type must be paged",
                "the executor refuses other KV caches: 'TrtGptModelInflightBatching requires "
                "GPT attention/Mamba Conv 1d plugin with packed input and paged KV cache.' "
                "(trtGptModelInflightBatching.cpp, constructor, 1.2.0rc2)",
            )
        )
    for name, value in flags.items():
        if value in ("", None):
            refusals.append(
                _ours(f"{name} has no explicit value", "the manifest records every flag's value")
            )
    # The release's own checks: a refused build, or one that builds other flags than the
    # recipe (and so the manifest) says.
    outcome = target.release_outcome()
    refusals.extend(r.describe() for r in outcome.refusals)
    refusals.extend(o.describe() for o in outcome.overrides)

    if gpu.has_fp8 and p.weights != "fp8":
        advice.append(
            _ours(
                f"{gpu.key} supports FP8 but the recipe uses {p.weights} weights",
                "FP8 weights take half the memory and run the faster FP8 GEMMs",
            )
        )
    if p.weights == "bf16" and p.kv_cache not in ("bf16", "int8"):
        advice.append(
            _ours(
                "BF16 weights pair with a BF16 or INT8 KV cache",
                "the matrix's BF16 recipes keep the KV cache BF16 or INT8",
            )
        )
    if p.weights == "fp8" and flags.get("--gemm_plugin") not in ("disable", "fp8"):
        advice.append(_ours("FP8 weights want --gemm_plugin disable", "the tuning guide"))
    if flags.get("--use_paged_context_fmha") != "enable":
        advice.append(
            _ours(
                "--use_paged_context_fmha should be enabled",
                "without it the executor turns chunked context and KV reuse off",
            )
        )
    for limit in ("max_num_tokens", "max_batch_size"):
        size: int = getattr(lim, limit)
        if not is_power_of_two(size):
            advice.append(
                _ours(f"{limit} {size} is not a power of two", "the tuning guide sweeps them so")
            )
    return RecipeReview(tuple(refusals), tuple(advice))


def recipe_problems(target: Target) -> list[str]:
    """Every finding, refusal or advice: what the production matrix must be free of."""
    review = review_recipe(target)
    return [*review.refusals, *review.advice]
