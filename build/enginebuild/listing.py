"""`engines list`: every engine under a root, its manifest summary and whether it runs here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inference.engines.manifest import ManifestError, RuntimeInfo, engine_problems, read_manifest


@dataclass(frozen=True)
class EngineRow:
    path: Path
    summary: str
    runs_here: bool
    why_not: str


def engine_dirs(root: Path) -> list[Path]:
    """<root>/<model-slug>/<gpu-key>/ directories, skipping staging and work (dot) dirs."""
    if not root.is_dir():
        return []
    return sorted(
        gpu_dir
        for model_dir in root.iterdir()
        if model_dir.is_dir() and not model_dir.name.startswith(".")
        for gpu_dir in model_dir.iterdir()
        if gpu_dir.is_dir() and not gpu_dir.name.startswith(".")
    )


def list_engines(root: Path, runtime: RuntimeInfo) -> list[EngineRow]:
    rows = []
    for path in engine_dirs(root):
        try:
            manifest = read_manifest(path)
        except ManifestError as exc:
            rows.append(EngineRow(path, "(no usable manifest)", False, str(exc)))
            continue
        _, problems = engine_problems(path, model_id=manifest.model_id, runtime=runtime)
        rows.append(EngineRow(path, manifest.summary(), not problems, "; ".join(problems)))
    return rows


def format_rows(root: Path, rows: list[EngineRow], runtime: RuntimeInfo) -> str:
    gpu = f"{runtime.gpu.name} (sm{runtime.gpu.compute_capability})" if runtime.gpu else "no GPU"
    trtllm = runtime.tensorrt_llm_version or "not installed"
    lines = [f"engines under {root} (this machine: {gpu}, TensorRT-LLM {trtllm})"]
    if not rows:
        lines.append("  none (layout: <root>/<model-slug>/<gpu-key>/)")
    for row in rows:
        lines.append(f"  {row.path.relative_to(root)}")
        lines.append(f"    {row.summary}")
        lines.append(
            "    runs here: yes" if row.runs_here else f"    runs here: no — {row.why_not}"
        )
    return "\n".join(lines)
