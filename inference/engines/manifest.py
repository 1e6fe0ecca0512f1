"""The engine manifest: what a compiled TensorRT-LLM engine was built for, and whether it runs here.

TensorRT engines only run on the GPU architecture (compute capability) and the TensorRT /
TensorRT-LLM versions that built them, and the engine's own `config.json` records neither the
GPU nor the TensorRT version. So the build pipeline writes `tensorchat-manifest.json` next to
`config.json` and `rank*.engine`, and the inference service checks it before loading, turning
TensorRT's opaque deserialisation failures ("expecting compute 9.0 got compute 8.9", "Version
tag does not match") into an error that says which build to run.

Only JSON is parsed here; `tensorrt_llm` is never imported (it needs libcuda just to import).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inference.engines.base import EngineUnavailableError

log = logging.getLogger(__name__)

MANIFEST_FILENAME = "tensorchat-manifest.json"
SCHEMA_VERSION = 1
ENGINE_CONFIG_FILENAME = "config.json"
# The TensorRT-LLM line that still builds and runs compiled engines (later releases removed them).
PINNED_TENSORRT_LLM_VERSION = "1.2.1"
# Shown in rebuild commands when the caller does not know where the HF checkpoint lives.
CHECKPOINT_PLACEHOLDER = "<HF_CHECKPOINT_DIR>"

# Files that define a tokenizer's behaviour; their hash ties an engine to the tokenizer it
# was built with (a different vocab silently produces garbage, not an error).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer.model.v3",
    "tekken.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)


class ManifestError(EngineUnavailableError):
    """The manifest file is missing or cannot be parsed; the message names the file."""


class EngineMismatchError(EngineUnavailableError):
    """The engine cannot run here; the message says what differs and which build to run."""


@dataclass(frozen=True)
class GpuInfo:
    name: str  # as nvidia-smi reports it, e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: str  # "major.minor", e.g. "9.0"


@dataclass(frozen=True)
class RuntimeInfo:
    """What this machine offers an engine; None where the GPU or a package is absent."""

    gpu: GpuInfo | None
    tensorrt_llm_version: str | None
    tensorrt_version: str | None


@dataclass(frozen=True)
class Precision:
    weights: str  # "fp8", "bf16", "int8_wo", "int4_awq"
    kv_cache: str  # "fp8", "int8", "bf16"


@dataclass(frozen=True)
class Limits:
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int


@dataclass(frozen=True)
class EngineManifest:
    """Everything an engine is tied to, as recorded by the build that produced it."""

    model_id: str
    checkpoint_sha256: str
    tokenizer_sha256: str
    gpu_key: str  # the build target, e.g. "h100"
    gpu_name: str
    compute_capability: str
    tensorrt_llm_version: str
    tensorrt_version: str | None
    precision: Precision
    limits: Limits
    # trtllm-build flags without paths, e.g. {"--gemm_plugin": "disable"}.
    build_flags: Mapping[str, str] = field(default_factory=dict)
    # tp_size * pp_size: how many rank{N}.engine files the engine has.
    world_size: int = 1
    created_at: str = ""
    # True when built on a machine whose GPU is not the target (CI dry runs); never served.
    cross_plan: bool = False
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["build_flags"] = dict(self.build_flags)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineManifest:
        """Parse a manifest dict; raises KeyError/TypeError/ValueError when it is malformed."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r} is not {SCHEMA_VERSION}")
        precision = data["precision"]
        limits = data["limits"]
        flags = data.get("build_flags", {})
        if not isinstance(flags, dict):
            raise TypeError("build_flags is not an object")
        return cls(
            model_id=_str(data, "model_id"),
            checkpoint_sha256=_str(data, "checkpoint_sha256"),
            tokenizer_sha256=_str(data, "tokenizer_sha256"),
            gpu_key=_str(data, "gpu_key"),
            gpu_name=_str(data, "gpu_name"),
            compute_capability=_str(data, "compute_capability"),
            tensorrt_llm_version=_str(data, "tensorrt_llm_version"),
            tensorrt_version=_opt_str(data, "tensorrt_version"),
            precision=Precision(
                weights=_str(precision, "weights"), kv_cache=_str(precision, "kv_cache")
            ),
            limits=Limits(
                max_batch_size=_int(limits, "max_batch_size"),
                max_input_len=_int(limits, "max_input_len"),
                max_seq_len=_int(limits, "max_seq_len"),
                max_num_tokens=_int(limits, "max_num_tokens"),
            ),
            build_flags={str(k): str(v) for k, v in flags.items()},
            world_size=_int(data, "world_size", default=1),
            created_at=str(data.get("created_at", "")),
            cross_plan=bool(data.get("cross_plan", False)),
            schema_version=SCHEMA_VERSION,
        )

    def summary(self) -> str:
        """One line for listings: target, precision, limits, versions."""
        lim = self.limits
        return (
            f"{self.model_id} on {self.gpu_key} ({self.gpu_name}, sm{self.compute_capability}) "
            f"weights={self.precision.weights} kv={self.precision.kv_cache} "
            f"batch={lim.max_batch_size} input={lim.max_input_len} seq={lim.max_seq_len} "
            f"tokens={lim.max_num_tokens} trtllm={self.tensorrt_llm_version} "
            f"built={self.created_at or '?'}" + (" CROSS-PLAN" if self.cross_plan else "")
        )


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise TypeError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} must be a string or null, got {value!r}")
    return value


def _int(data: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    # bool is an int subclass; a manifest saying `true` for a limit is damaged.
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise TypeError(f"{key} must be a positive integer, got {value!r}")
    return value


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


# ---------------------------------------------------------------------------------------------
# Naming: model slugs and GPU target keys


def model_slug(model_id: str) -> str:
    """Directory name for a model id: 'Qwen/Qwen2.5-7B' -> 'qwen--qwen2.5-7b'."""
    slug = model_id.strip().lower().replace("/", "--")
    return re.sub(r"[^a-z0-9._-]+", "-", slug)


# Ordered: the first rule whose tokens all appear in the GPU name wins. Tokens are compared
# whole, so "L4" never matches "NVIDIA L40S" and "H200" never matches "GH200".
_GPU_KEY_RULES: tuple[tuple[str, frozenset[str]], ...] = (
    ("h200", frozenset({"H200"})),
    ("h100", frozenset({"H100"})),
    ("l40s", frozenset({"L40S"})),
    ("l4", frozenset({"L4"})),
    ("a100-80gb", frozenset({"A100", "80GB"})),
    ("a100-40gb", frozenset({"A100"})),
    ("a10g", frozenset({"A10G"})),
)


def gpu_key_for(gpu_name: str) -> str | None:
    """The build target key for a GPU name from nvidia-smi or a node label, None if no target.

    Accepts "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB" and the Kubernetes
    `nvidia.com/gpu.product` spelling "NVIDIA-A100-SXM4-40GB" alike.
    """
    tokens = set(re.split(r"[\s_\-]+", gpu_name.upper()))
    for key, needed in _GPU_KEY_RULES:
        if needed <= tokens:
            return key
    return None


# ---------------------------------------------------------------------------------------------
# Runtime detection


def detect_runtime() -> RuntimeInfo:
    """Detect this machine's GPU (via nvidia-smi) and installed TensorRT(-LLM) versions.

    Never imports tensorrt_llm: the versions come from package metadata, so this works (and
    returns None fields) on a laptop without CUDA.
    """
    return RuntimeInfo(
        gpu=_detect_gpu(),
        tensorrt_llm_version=_package_version("tensorrt_llm"),
        tensorrt_version=_package_version("tensorrt", "tensorrt-cu13", "tensorrt-cu12"),
    )


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _detect_gpu() -> GpuInfo | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    cmd = [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"]
    # nvidia-smi ignores CUDA_VISIBLE_DEVICES; ask for the device this process will use.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if visible:
        cmd.append(f"--id={visible}")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed, assuming no GPU: %s", exc)
        return None
    return parse_nvidia_smi(out)


def parse_nvidia_smi(output: str) -> GpuInfo | None:
    """First GPU from `nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader` output."""
    for line in output.splitlines():
        name, sep, cap = line.rpartition(",")
        if sep and name.strip() and re.fullmatch(r"\d+\.\d+", cap.strip()):
            return GpuInfo(name=name.strip(), compute_capability=cap.strip())
    return None


# ---------------------------------------------------------------------------------------------
# Hashing the inputs an engine was built from


def files_sha256(root: Path, paths: Iterable[Path]) -> str:
    """One sha256 over the given files' paths (relative to root) and contents, order-independent."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def checkpoint_weight_files(checkpoint_dir: Path) -> list[Path]:
    """The files an HF checkpoint's weights load from, as transformers would pick them.

    A sharded checkpoint is its index plus the shards it names. Mistral repos also carry
    `consolidated.safetensors` (the same weights in Mistral's format): not what we build from.
    """
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = checkpoint_dir / index_name
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ManifestError(f"checkpoint index {index} is damaged: {exc}") from exc
            return [index, *(checkpoint_dir / str(name) for name in sorted(shards))]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (checkpoint_dir / single).is_file():
            return [checkpoint_dir / single]
    return []


def checkpoint_sha256(checkpoint_dir: Path) -> str:
    """Hash of an HF checkpoint's config.json and weights (ManifestError if there are none)."""
    weights = checkpoint_weight_files(checkpoint_dir)
    if not weights:
        raise ManifestError(f"no weights (model.safetensors or an index) in {checkpoint_dir}")
    missing = [p for p in weights if not p.is_file()]
    if missing:
        raise ManifestError(
            f"checkpoint {checkpoint_dir} lacks {', '.join(p.name for p in missing)}"
        )
    return files_sha256(checkpoint_dir, [checkpoint_dir / "config.json", *weights])


def tokenizer_sha256(tokenizer_dir: Path) -> str:
    """Hash of the tokenizer files in a checkpoint (raises ManifestError if there are none)."""
    files = [tokenizer_dir / n for n in TOKENIZER_FILES if (tokenizer_dir / n).is_file()]
    if not any(p.name != "generation_config.json" for p in files):
        raise ManifestError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {tokenizer_dir}")
    return files_sha256(tokenizer_dir, files)


# ---------------------------------------------------------------------------------------------
# Reading and writing


def write_manifest(engine_dir: Path, manifest: EngineManifest) -> Path:
    """Write the manifest into engine_dir atomically (a reader never sees half a file)."""
    engine_dir.mkdir(parents=True, exist_ok=True)
    path = engine_dir / MANIFEST_FILENAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(engine_dir: Path) -> EngineManifest:
    path = engine_dir / MANIFEST_FILENAME
    try:
        raw = path.read_text()
    except FileNotFoundError:
        raise ManifestError(f"engine manifest {path} is missing") from None
    except OSError as exc:
        raise ManifestError(f"engine manifest {path} cannot be read: {exc}") from exc
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError("top level is not an object")
        return EngineManifest.from_dict(data)
    except (ValueError, KeyError, TypeError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ManifestError(f"engine manifest {path} is damaged: {detail}") from exc


# ---------------------------------------------------------------------------------------------
# Compatibility


def build_command(
    model_id: str, gpu_key: str | None, out_root: Path | str, checkpoint_dir: Path | str | None
) -> str:
    """The exact CLI command that builds the engine for model_id on this GPU."""
    checkpoint = str(checkpoint_dir) if checkpoint_dir is not None else CHECKPOINT_PLACEHOLDER
    return (
        f"tensorchat engines build --model {model_id} --gpu {gpu_key or 'auto'} "
        f"--checkpoint {checkpoint} --out {out_root}"
    )


def _engines_root_of(engine_dir: Path, model_id: str) -> Path:
    # Engines live at <root>/<model-slug>/<gpu-key>/; otherwise rebuild next to this one.
    if engine_dir.parent.name == model_slug(model_id):
        return engine_dir.parent.parent
    return engine_dir.parent


def check_files(engine_dir: Path) -> list[str]:
    """Problems with the engine's own files (config.json, rank*.engine); empty when complete."""
    config_path = engine_dir / ENGINE_CONFIG_FILENAME
    if not engine_dir.is_dir():
        return [f"engine directory {engine_dir} does not exist"]
    if not config_path.is_file():
        return [f"{config_path} is missing"]
    try:
        config = json.loads(config_path.read_text())
        mapping = config.get("pretrained_config", {}).get("mapping", {})
        world_size = int(mapping.get("world_size", 1))
    except (ValueError, AttributeError, TypeError, OSError) as exc:
        return [f"{config_path} is damaged: {exc}"]
    problems = []
    for rank in range(world_size):
        rank_file = engine_dir / f"rank{rank}.engine"
        if not rank_file.is_file() or rank_file.stat().st_size == 0:
            problems.append(f"{rank_file} is missing or empty")
    return problems


def engine_config_version(engine_dir: Path) -> str | None:
    """The TensorRT-LLM version recorded by trtllm-build in config.json, if readable."""
    try:
        version = json.loads((engine_dir / ENGINE_CONFIG_FILENAME).read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def compatibility_problems(
    manifest: EngineManifest, *, model_id: str, runtime: RuntimeInfo
) -> list[str]:
    """Why an engine with this manifest cannot serve model_id here; empty when it can."""
    problems = []
    if manifest.model_id.casefold() != model_id.casefold():
        problems.append(f"it was built for model {manifest.model_id}, not {model_id}")
    if manifest.cross_plan:
        problems.append("it is a cross-plan build (made without its target GPU) and never served")
    gpu = runtime.gpu
    if gpu is None:
        problems.append(
            f"no NVIDIA GPU was detected (nvidia-smi); the engine needs compute capability "
            f"{manifest.compute_capability} ({manifest.gpu_name})"
        )
    elif gpu.compute_capability != manifest.compute_capability:
        problems.append(
            f"it was built for compute capability {manifest.compute_capability} "
            f"({manifest.gpu_name}) but this GPU is {gpu.name} with compute capability "
            f"{gpu.compute_capability}"
        )
    if runtime.tensorrt_llm_version is None:
        problems.append(
            f"TensorRT-LLM is not installed; the engine needs TensorRT-LLM "
            f"{manifest.tensorrt_llm_version}"
        )
    elif runtime.tensorrt_llm_version != manifest.tensorrt_llm_version:
        problems.append(
            f"it was built with TensorRT-LLM {manifest.tensorrt_llm_version} but "
            f"TensorRT-LLM {runtime.tensorrt_llm_version} is installed"
        )
    # TensorRT's serialisation format is version-locked too; compare when both are known.
    if (
        runtime.tensorrt_version is not None
        and manifest.tensorrt_version is not None
        and runtime.tensorrt_version != manifest.tensorrt_version
    ):
        problems.append(
            f"it was built with TensorRT {manifest.tensorrt_version} but TensorRT "
            f"{runtime.tensorrt_version} is installed"
        )
    return problems


def engine_problems(
    engine_dir: Path, *, model_id: str, runtime: RuntimeInfo
) -> tuple[EngineManifest | None, list[str]]:
    """The engine's manifest (None if unreadable) and every reason it cannot run here."""
    problems = check_files(engine_dir)
    try:
        manifest = read_manifest(engine_dir)
    except ManifestError as exc:
        return None, [*problems, str(exc)]
    problems.extend(compatibility_problems(manifest, model_id=model_id, runtime=runtime))
    recorded = engine_config_version(engine_dir)
    if recorded is not None and recorded != manifest.tensorrt_llm_version:
        problems.append(
            f"config.json says TensorRT-LLM {recorded} but the manifest says "
            f"{manifest.tensorrt_llm_version} (engine files replaced after the build?)"
        )
    return manifest, problems


def check_engine(
    engine_dir: Path,
    *,
    model_id: str,
    runtime: RuntimeInfo,
    checkpoint_dir: Path | None = None,
) -> EngineManifest:
    """Return the engine's manifest if it can serve model_id on this runtime.

    Raises EngineMismatchError listing every difference found and the exact build command
    (using checkpoint_dir in it when given).
    """
    manifest, problems = engine_problems(engine_dir, model_id=model_id, runtime=runtime)
    if problems or manifest is None:
        gpu_key = gpu_key_for(runtime.gpu.name) if runtime.gpu else None
        command = build_command(
            model_id, gpu_key, _engines_root_of(engine_dir, model_id), checkpoint_dir
        )
        raise EngineMismatchError(
            f"engine {engine_dir} cannot serve {model_id} here: "
            + "; ".join(problems)
            + f". Build a matching engine with: {command}"
        )
    if runtime.gpu is not None and runtime.gpu.name != manifest.gpu_name:
        # Same architecture, so TensorRT will load it; limits were sized for another card.
        log.warning(
            "engine %s was built on %s and runs on %s (same compute capability %s); its "
            "batch/KV limits were sized for the build GPU",
            engine_dir,
            manifest.gpu_name,
            runtime.gpu.name,
            manifest.compute_capability,
        )
    return manifest


def select_engine(
    engines_root: Path,
    *,
    model_id: str,
    runtime: RuntimeInfo,
    checkpoint_dir: Path | None = None,
) -> Path:
    """Pick the engine under <root>/<model-slug>/<gpu-key>/ that can run model_id here.

    Prefers the directory named for this GPU's target key, then any other that passes
    check_engine (same compute capability). Raises EngineMismatchError listing every
    candidate and why it was refused, plus the build command.
    """
    model_dir = engines_root / model_slug(model_id)
    local_key = gpu_key_for(runtime.gpu.name) if runtime.gpu else None
    # Dot-prefixed dirs are builds in progress or being replaced; never candidates.
    candidates = (
        sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if model_dir.is_dir()
        else []
    )
    candidates.sort(key=lambda p: p.name != local_key)  # stable: the local key first
    refused = []
    for candidate in candidates:
        manifest, problems = engine_problems(candidate, model_id=model_id, runtime=runtime)
        if manifest is not None and not problems:
            check_engine(candidate, model_id=model_id, runtime=runtime)  # logs a GPU-name note
            return candidate
        refused.append(f"{candidate.name}: {'; '.join(problems)}")
    command = build_command(model_id, local_key, engines_root, checkpoint_dir)
    gpu = (
        f"{runtime.gpu.name} (compute capability {runtime.gpu.compute_capability})"
        if runtime.gpu
        else "no GPU"
    )
    found = "; ".join(refused) if refused else f"no engines in {model_dir}"
    raise EngineMismatchError(
        f"no engine under {engines_root} can serve {model_id} on {gpu} with TensorRT-LLM "
        f"{runtime.tensorrt_llm_version or 'not installed'}. Found: {found}. "
        f"Build one with: {command}"
    )
