"""The `tensorchat` command as a user runs it: real processes, signals, --help."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tensorchat.cli import build_parser
from tests.integration.conftest import MISTRAL_ID


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_serving(address: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert process.poll() is None, "the server exited before serving"
            try:
                response = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    pytest.fail(f"{address} was not serving after {timeout}s")


def test_every_command_has_help() -> None:
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"serve", "inference", "facade", "keys", "engines", "bench"} <= set(subcommands)
    for name, subparser in subcommands.items():
        text = subparser.format_help()
        assert text.startswith("usage: tensorchat"), name
        for action in subparser._actions:
            if action.option_strings and action.help is None:
                pytest.fail(f"tensorchat {name} {action.option_strings[0]} has no help text")


@pytest.mark.slow
def test_inference_process_drains_and_exits_on_sigterm(
    tiny_mistral_dir: Path, tmp_path: Path
) -> None:
    # SIGINT goes through the same handler; SIGTERM is what Kubernetes sends.
    config = tmp_path / "models.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"id": MISTRAL_ID, "checkpoint": str(tiny_mistral_dir), "context_length": 256}
                ]
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorchat",
            "inference",
            "--port",
            str(port),
            "--models",
            str(config),
            "--shutdown-grace",
            "2",
        ],
    )
    try:
        wait_serving(f"127.0.0.1:{port}", process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
