"""Regenerates the Python code for `protos/` (run `python -m tensorchat.protogen`).

The generated modules are committed so that installing tensorchat needs no code generator;
`tests/unit/test_protos.py` fails when they are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_FILES = ("tensorchat/v1/inference.proto",)


def generate(out_dir: Path = REPO_ROOT) -> list[Path]:
    """Writes the messages, the gRPC stubs and their type stubs for every proto under `out_dir`."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    # mypy-protobuf's stubs (unlike protoc's own --pyi_out) type enums and fields precisely.
    plugins = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return [
        out_dir / name.replace(".proto", suffix)
        for name in PROTO_FILES
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
    ]


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)
    sys.exit(0)
