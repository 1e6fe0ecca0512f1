"""`engines build`: check the machine, run a target's plan via the runner, write the manifest."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import enginebuild
import inference
from enginebuild.engine_config import flags_as_built
from enginebuild.plan import BuildPaths, Step, make_plan, recorded_build_flags
from enginebuild.runner import Runner
from enginebuild.targets import Matrix, Target, review_recipe
from inference.engines.manifest import (
    ENGINE_CONFIG_FILENAME,
    EngineManifest,
    Limits,
    RuntimeInfo,
    checkpoint_sha256,
    gpu_key_for,
    tokenizer_sha256,
    utc_now,
    write_manifest,
)


class BuildError(RuntimeError):
    """The build cannot start or its output is unusable; the message says what to do."""


@dataclass(frozen=True)
class BuildRequest:
    model_id: str
    gpu: str  # a target key, or "auto" for this machine's GPU
    checkpoint: Path
    out_root: Path
    calib_data: Path | None = None
    cross_plan: bool = False
    force: bool = False
    keep_work: bool = False


@dataclass(frozen=True)
class Resolved:
    target: Target
    # True when the engine is not built on its target architecture: recorded in the manifest,
    # and such an engine is never served.
    cross: bool


def resolve(request: BuildRequest, matrix: Matrix, runtime: RuntimeInfo) -> Resolved:
    """Pick the target and refuse to build for a GPU that is not here (unless cross-plan)."""
    local_key = gpu_key_for(runtime.gpu.name) if runtime.gpu else None
    here = (
        f"{runtime.gpu.name} (compute capability {runtime.gpu.compute_capability})"
        if runtime.gpu
        else "no NVIDIA GPU (nvidia-smi found none)"
    )
    if request.gpu == "auto":
        if local_key is None:
            raise BuildError(
                f"--gpu auto: this machine has {here}, which is not a build target; "
                f"targets: {', '.join(matrix.gpus)}"
            )
        gpu_key = local_key
    else:
        gpu_key = matrix.gpu(request.gpu).key
    target = matrix.target(request.model_id, gpu_key)
    if local_key == target.gpu.key:
        return Resolved(target, cross=False)
    if not request.cross_plan:
        raise BuildError(
            f"the target GPU {target.gpu.key} ({target.gpu.name}) is not present: this machine "
            f"has {here}. TensorRT compiles for the GPU it runs on, so build on a "
            f"{target.gpu.key} node (see build/k8s) or pass --cross-plan to run the pipeline "
            "anyway (the engine is marked cross-plan and never served)"
        )
    same_arch = (
        runtime.gpu is not None and runtime.gpu.compute_capability == target.gpu.compute_capability
    )
    return Resolved(target, cross=not same_arch)


def preflight(
    request: BuildRequest, resolved: Resolved, matrix: Matrix, runtime: RuntimeInfo
) -> tuple[str, ...]:
    """Everything that can be checked before hours of GPU time are spent.

    Returns the recipe's advice (it builds, but not as the matrix would want), for warnings.
    """
    target = resolved.target
    review = review_recipe(target)
    if review.refusals:
        raise BuildError(
            f"{target.name}: the recipe cannot be built as written, so nothing was run:\n  "
            + "\n  ".join(review.refusals)
            + "\nfix the target in the build matrix (--targets, default build/targets.yaml)"
        )
    if not (request.checkpoint / "config.json").is_file():
        raise BuildError(
            f"--checkpoint {request.checkpoint} is not an HF checkpoint (no config.json)"
        )
    version = runtime.tensorrt_llm_version
    if version != matrix.tensorrt_llm_version and not request.cross_plan:
        found = f"TensorRT-LLM {version}" if version else "no TensorRT-LLM"
        raise BuildError(
            f"engines are built with TensorRT-LLM {matrix.tensorrt_llm_version} but this machine "
            f"has {found}; run the build in the builder image (build/Dockerfile)"
        )
    if target.needs_calibration:
        if request.calib_data is None:
            raise BuildError(
                f"{target.name} quantizes ({target.precision.weights} weights, "
                f"{target.precision.kv_cache} KV) and needs calibration text: pass --calib-data "
                "FILE (.jsonl/.json/.txt; the build never downloads a dataset)"
            )
        if not request.calib_data.is_file():
            raise BuildError(f"--calib-data {request.calib_data} does not exist")
    engine_dir = request.out_root / target.model.slug / target.gpu.key
    if engine_dir.exists() and not request.force:
        raise BuildError(f"{engine_dir} already exists; pass --force to rebuild and replace it")
    return review.advice


def _python_path() -> str:
    # The verify step re-enters this package in a subprocess; make sure it finds the same code.
    roots = {
        str(Path(enginebuild.__file__).resolve().parent.parent),
        str(Path(inference.__file__).resolve().parent.parent),
    }
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join([*sorted(roots), *([existing] if existing else [])])


def read_engine_config(engine_dir: Path) -> dict[str, Any]:
    path = engine_dir / ENGINE_CONFIG_FILENAME
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BuildError(f"trtllm-build left no readable {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise BuildError(f"{path} is not a JSON object")
    return config


def make_manifest(
    resolved: Resolved,
    paths: BuildPaths,
    runtime: RuntimeInfo,
    build_argv: tuple[str, ...],
    *,
    warn: TextIO,
) -> EngineManifest:
    """The manifest of the freshly built engine, from what trtllm-build actually wrote."""
    target = resolved.target
    config = read_engine_config(paths.staging_dir)
    build_config = config.get("build_config", {})
    planned = target.limits
    built = Limits(
        max_batch_size=int(build_config.get("max_batch_size", planned.max_batch_size)),
        max_input_len=int(build_config.get("max_input_len", planned.max_input_len)),
        max_seq_len=int(build_config.get("max_seq_len", planned.max_seq_len)),
        max_num_tokens=int(build_config.get("max_num_tokens", planned.max_num_tokens)),
    )
    if built != planned:
        # trtllm-build clamps some limits (e.g. to the model's positions); record the truth.
        print(
            f"warning: trtllm-build changed the limits: planned {planned}, built {built}", file=warn
        )
    # trtllm-build overrides some plugin flags silently (e.g. FP8 context FMHA on with FP8 KV
    # and paged context FMHA): record what config.json says was built, not what was asked.
    build_flags, changed = flags_as_built(recorded_build_flags(build_argv), config)
    for change in changed:
        print(f"warning: trtllm-build changed a flag: {change}", file=warn)
    mapping = config.get("pretrained_config", {}).get("mapping", {})
    # config.json's version is what really built the engine; the installed one is the fallback.
    version = config.get("version") or runtime.tensorrt_llm_version
    if not version:
        raise BuildError(f"cannot tell which TensorRT-LLM built {paths.staging_dir}")
    gpu = runtime.gpu
    on_target_arch = not resolved.cross and gpu is not None
    return EngineManifest(
        model_id=target.model.id,
        checkpoint_sha256=checkpoint_sha256(paths.checkpoint),
        tokenizer_sha256=tokenizer_sha256(paths.checkpoint),
        gpu_key=target.gpu.key,
        gpu_name=gpu.name if on_target_arch and gpu else target.gpu.name,
        compute_capability=(
            gpu.compute_capability if on_target_arch and gpu else target.gpu.compute_capability
        ),
        tensorrt_llm_version=str(version),
        tensorrt_version=runtime.tensorrt_version,
        precision=target.precision,
        limits=built,
        build_flags=build_flags,
        world_size=int(mapping.get("world_size", 1)),
        created_at=utc_now(),
        cross_plan=resolved.cross,
    )


def _install(paths: BuildPaths) -> None:
    """Swap the verified staging dir into place; the old engine is removed only afterwards."""
    old = paths.engine_dir.with_name(f".{paths.engine_dir.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if paths.engine_dir.exists():
        paths.engine_dir.rename(old)
    paths.staging_dir.rename(paths.engine_dir)
    if old.exists():
        shutil.rmtree(old)


def build_engine(
    request: BuildRequest,
    *,
    matrix: Matrix,
    runtime: RuntimeInfo,
    runner: Runner | None = None,
    out: TextIO | None = None,
) -> Path:
    """Build one engine end to end; returns the installed engine directory."""
    resolved = resolve(request, matrix, runtime)
    advice = preflight(request, resolved, matrix, runtime)
    target = resolved.target
    paths = BuildPaths.for_target(
        target, checkpoint=request.checkpoint, out_root=request.out_root,
        calib_data=request.calib_data,
    )  # fmt: skip
    runner = runner or Runner(out=out, env={**os.environ, "PYTHONPATH": _python_path()})
    for finding in advice:
        runner.say(f"warning: {finding}")
    if resolved.cross:
        runner.say(
            f"cross-plan: building {target.gpu.key} on "
            f"{runtime.gpu.name if runtime.gpu else 'no GPU'}; the manifest marks it unservable"
        )
    for stale in (paths.staging_dir, paths.work_dir):
        if stale.exists():
            shutil.rmtree(stale)
    paths.work_dir.mkdir(parents=True)
    steps = make_plan(target, paths)
    build_argv = _argv_of(steps, "trtllm-build")

    def write() -> None:
        manifest = make_manifest(resolved, paths, runtime, build_argv, warn=runner.out)
        written = write_manifest(paths.staging_dir, manifest)
        runner.say(f"    wrote {written}: {manifest.summary()}")

    runner.run(steps, {"manifest": write, "install": lambda: _install(paths)})
    if not request.keep_work:
        shutil.rmtree(paths.work_dir)
    runner.say(f"engine ready: {paths.engine_dir}")
    return paths.engine_dir


def _argv_of(steps: list[Step], name: str) -> tuple[str, ...]:
    for step in steps:
        if step.name == name and step.argv is not None:
            return step.argv
    raise BuildError(f"the plan has no {name} step")
