"""`tensorchat engines`: plan, build, verify and list engines; render k8s Jobs; print the CI matrix.

Heavy modules are imported inside the handlers so `tensorchat --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PLACEHOLDER_OUT = Path("/engines")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `engines` with its subcommands to the `tensorchat` command."""
    parser = subparsers.add_parser(
        "engines",
        help="plan, build, verify and list TensorRT-LLM engines per GPU type",
        description=(
            "Build TensorRT-LLM 1.2.1 engines for the matrix in build/targets.yaml (one per "
            "model and GPU type), verify them and list what can run on this machine."
        ),
    )
    parser.set_defaults(handler=lambda _args: _usage(parser))
    add_engine_commands(parser.add_subparsers(dest="engines_command", metavar="SUBCOMMAND"))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _targets_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--targets",
        type=Path,
        default=None,
        help="build matrix file (default $TENSORCHAT_TARGETS, else build/targets.yaml)",
    )


def add_engine_commands(sub: argparse._SubParsersAction) -> None:
    """The engines subcommands; also used by `python -m enginebuild`."""
    p = sub.add_parser(
        "plan",
        help="print every step of a target's build with its exact command",
        description="Print the build plan of one target: precision, limits, sizing, and each "
        "step (calibration data, quantize or convert, trtllm-build, manifest, verify, install) "
        "with its exact command. Runs nothing.",
    )
    p.add_argument("--model", required=True, help="model id, e.g. Qwen/Qwen2.5-Coder-7B-Instruct")
    p.add_argument("--gpu", required=True, help="GPU target key, e.g. h100, l4, a100-80gb")
    p.add_argument(
        "--checkpoint", type=Path, default=None,
        help="HF checkpoint dir to show in commands (default /models/<model-slug>)",
    )  # fmt: skip
    p.add_argument(
        "--out", type=Path, default=PLACEHOLDER_OUT,
        help="engines root to show in commands (default /engines)",
    )  # fmt: skip
    p.add_argument("--calib-data", type=Path, default=None, help="calibration file to show")
    _targets_flag(p)
    p.set_defaults(handler=_plan)

    b = sub.add_parser(
        "build",
        help="build one engine on this machine (in the builder image)",
        description="Run a target's plan through one runner (streamed output, progress per "
        "step), write tensorchat-manifest.json, verify, and move the engine to "
        "OUT/<model-slug>/<gpu-key>/. Refuses a GPU that is not present unless --cross-plan.",
    )
    b.add_argument("--model", required=True, help="model id from the matrix")
    b.add_argument("--gpu", required=True, help="GPU target key, or 'auto' for this machine's GPU")
    b.add_argument("--checkpoint", type=Path, required=True, help="local HF checkpoint directory")
    b.add_argument("--out", type=Path, required=True, help="engines root directory")
    b.add_argument(
        "--calib-data", type=Path, default=None,
        help="local calibration text (.jsonl with text/prompt/messages, .json list, or .txt "
        "with blank-line separated samples); required by quantized targets, never downloaded",
    )  # fmt: skip
    b.add_argument(
        "--cross-plan", action="store_true",
        help="run even though the target GPU is not here; unless this GPU has the same "
        "architecture, the manifest marks the engine cross-plan and it is never served",
    )  # fmt: skip
    b.add_argument("--force", action="store_true", help="replace an existing engine")
    b.add_argument(
        "--keep-work", action="store_true",
        help="keep OUT/.work/ (calibration set, TensorRT-LLM checkpoint) after success",
    )  # fmt: skip
    _targets_flag(b)
    b.set_defaults(handler=_build)

    v = sub.add_parser(
        "verify",
        help="check an engine directory; on a GPU also load it and compare with torch",
        description="Static checks (config.json, rank*.engine, manifest, config.json vs "
        "manifest, checkpoint/tokenizer sha256 with --checkpoint). With a GPU and TensorRT-LLM: "
        "compatibility, load, a smoke prompt, and greedy parity against the torch engine. "
        "Without them it stops after the static checks and says so.",
    )
    v.add_argument("engine_dir", type=Path, metavar="ENGINE_DIR", help="engine directory")
    v.add_argument(
        "--checkpoint", type=Path, default=None,
        help="the HF checkpoint the engine was built from (hash check, tokenizer, torch reference)",
    )  # fmt: skip
    v.set_defaults(handler=_verify)

    ls = sub.add_parser(
        "list",
        help="list engines under a root and whether each can run here",
        description="List ROOT/<model-slug>/<gpu-key>/ engines with their manifest summary and "
        "whether this machine's GPU and TensorRT-LLM can run them (and why not).",
    )
    ls.add_argument("root", type=Path, metavar="ROOT", help="engines root directory")
    ls.set_defaults(handler=_list)

    k = sub.add_parser(
        "k8s",
        help="render the Kubernetes build Job for targets",
        description="Render build/k8s/job.yaml.tmpl for one target (to stdout) or all of them "
        "(--all --out DIR, one file per target).",
    )
    k.add_argument("--model", help="model id (with --gpu)")
    k.add_argument("--gpu", help="GPU target key (with --model)")
    k.add_argument("--all", action="store_true", help="render every target of the matrix")
    k.add_argument("--out", type=Path, default=None, help="directory for --all (one file each)")
    k.add_argument("--image", default=None, help="builder image (default: the matrix's tag)")
    k.add_argument("--engines-pvc", default="tensorchat-engines", help="PVC engines are written to")
    k.add_argument("--models-pvc", default="tensorchat-models", help="PVC with HF checkpoints")
    k.add_argument(
        "--calibration-configmap", default="tensorchat-calibration",
        help="ConfigMap holding the calibration file",
    )  # fmt: skip
    k.add_argument(
        "--calibration-file", default="calibration.jsonl", help="file name in that ConfigMap"
    )
    k.add_argument(
        "--product", default=None,
        help="override the nvidia.com/gpu.product node label (e.g. a PCIe part)",
    )  # fmt: skip
    _targets_flag(k)
    k.set_defaults(handler=_k8s)

    m = sub.add_parser(
        "matrix",
        help="print the build matrix as GitHub Actions JSON",
        description='Print {"include": [...]} with one entry per target (model, gpu, slug, '
        "runner_label, needs_calibration) for a workflow's strategy.matrix.",
    )
    m.add_argument("--model", default="all", help="only this model id (default all)")
    m.add_argument("--gpu", default="all", help="only this GPU key (default all)")
    _targets_flag(m)
    m.set_defaults(handler=_matrix)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _plan(args: argparse.Namespace) -> int:
    from enginebuild.plan import BuildPaths, format_plan, make_plan
    from enginebuild.sizing import size
    from enginebuild.targets import TargetError, load_matrix

    try:
        matrix = load_matrix(args.targets)
        target = matrix.target(args.model, args.gpu)
    except TargetError as exc:
        return _fail(str(exc))
    checkpoint = args.checkpoint or Path("/models") / target.model.slug
    paths = BuildPaths.for_target(
        target, checkpoint=checkpoint, out_root=args.out, calib_data=args.calib_data
    )
    print(format_plan(target, make_plan(target, paths), size(target, matrix.sizing)))
    return 0


def _build(args: argparse.Namespace) -> int:
    from enginebuild.builder import BuildError, BuildRequest, build_engine
    from enginebuild.runner import StepFailed
    from enginebuild.targets import TargetError, load_matrix
    from inference.engines.manifest import ManifestError, detect_runtime

    request = BuildRequest(
        model_id=args.model,
        gpu=args.gpu,
        checkpoint=args.checkpoint,
        out_root=args.out,
        calib_data=args.calib_data,
        cross_plan=args.cross_plan,
        force=args.force,
        keep_work=args.keep_work,
    )
    try:
        build_engine(request, matrix=load_matrix(args.targets), runtime=detect_runtime())
    except (BuildError, TargetError, StepFailed, ManifestError) as exc:
        return _fail(str(exc))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from enginebuild.verify import verify
    from inference.engines.manifest import detect_runtime

    return verify(
        args.engine_dir, checkpoint=args.checkpoint, runtime=detect_runtime(), out=sys.stdout
    )


def _list(args: argparse.Namespace) -> int:
    from enginebuild.listing import format_rows, list_engines
    from inference.engines.manifest import detect_runtime

    runtime = detect_runtime()
    print(format_rows(args.root, list_engines(args.root, runtime), runtime))
    return 0


def _k8s(args: argparse.Namespace) -> int:
    from enginebuild.k8s import DEFAULT_IMAGE, JobOptions, job_name, render_job
    from enginebuild.targets import TargetError, load_matrix

    options = JobOptions(
        image=args.image or DEFAULT_IMAGE,
        engines_pvc=args.engines_pvc,
        models_pvc=args.models_pvc,
        calibration_configmap=args.calibration_configmap,
        calibration_file=args.calibration_file,
        product=args.product,
    )
    try:
        matrix = load_matrix(args.targets)
        if args.all:
            if args.out is None:
                return _fail("--all needs --out DIR")
            args.out.mkdir(parents=True, exist_ok=True)
            for target in matrix.targets:
                path = args.out / f"{job_name(target)}.yaml"
                path.write_text(render_job(target, options))
                print(path)
            return 0
        if not (args.model and args.gpu):
            return _fail("give --model and --gpu, or --all --out DIR")
        print(render_job(matrix.target(args.model, args.gpu), options), end="")
    except TargetError as exc:
        return _fail(str(exc))
    return 0


def _matrix(args: argparse.Namespace) -> int:
    from enginebuild.targets import TargetError, load_matrix

    try:
        matrix = load_matrix(args.targets)
        model = None if args.model == "all" else matrix.model(args.model)
        gpu = None if args.gpu == "all" else matrix.gpu(args.gpu)
    except TargetError as exc:
        return _fail(str(exc))
    include = [
        {
            "model": t.model.id,
            "gpu": t.gpu.key,
            "slug": t.model.slug,
            "runner_label": t.gpu.runner_label,
            "needs_calibration": t.needs_calibration,
        }
        for t in matrix.targets
        if (model is None or t.model == model) and (gpu is None or t.gpu == gpu)
    ]
    print(json.dumps({"include": include}))
    return 0
