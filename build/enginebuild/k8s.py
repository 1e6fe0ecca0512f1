"""Render the one Kubernetes Job template (build/k8s/job.yaml.tmpl) for build targets."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from enginebuild.targets import Target

DEFAULT_TEMPLATE = Path(__file__).resolve().parent.parent / "k8s" / "job.yaml.tmpl"
DEFAULT_IMAGE = "ghcr.io/tensorchat/engine-builder:trtllm-1.2.1"


@dataclass(frozen=True)
class JobOptions:
    image: str = DEFAULT_IMAGE
    engines_pvc: str = "tensorchat-engines"
    models_pvc: str = "tensorchat-models"
    calibration_configmap: str = "tensorchat-calibration"
    calibration_file: str = "calibration.jsonl"
    # Overrides the matrix's nvidia.com/gpu.product value (e.g. a PCIe part of the same GPU).
    product: str | None = None


def job_name(target: Target) -> str:
    """A DNS-1123 label (<= 63 chars) naming the target: tc-build-<model>-<gpu>."""
    model = re.sub(r"[^a-z0-9]+", "-", target.model.id.split("/")[-1].lower()).strip("-")
    return f"tc-build-{model}-{target.gpu.key}"[:63].rstrip("-")


def build_command(target: Target, options: JobOptions) -> list[str]:
    command = [
        "python3", "-m", "enginebuild", "build",
        "--model", target.model.id,
        "--gpu", target.gpu.key,
        "--checkpoint", f"/models/{target.model.slug}",
        "--out", "/engines",
        "--force",
    ]  # fmt: skip
    if target.needs_calibration:
        command += ["--calib-data", f"/calibration/{options.calibration_file}"]
    return command


def render_job(target: Target, options: JobOptions, template: Path = DEFAULT_TEMPLATE) -> str:
    values = {
        "job_name": job_name(target),
        "model_slug": target.model.slug,
        "gpu_key": target.gpu.key,
        "gpu_product": options.product or target.gpu.product,
        "image": options.image,
        # A JSON array is a valid YAML flow sequence and quotes every argument safely.
        "command": json.dumps(build_command(target, options)),
        "engines_pvc": options.engines_pvc,
        "models_pvc": options.models_pvc,
        "calibration_configmap": options.calibration_configmap,
        # A BF16 target reads no calibration file, so the ConfigMap may be absent.
        "calibration_optional": "false" if target.needs_calibration else "true",
    }
    # substitute (not safe_substitute): a placeholder without a value is a bug, not output.
    return Template(template.read_text()).substitute(values)
