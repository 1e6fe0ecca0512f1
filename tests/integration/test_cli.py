"""The `tensorchat` command as a user runs it: real processes, signals, --help."""

from __future__ import annotations

import argparse
import os
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
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    subcommands: dict[str, argparse.ArgumentParser] = action.choices
    assert {"serve", "inference", "facade", "keys", "engines", "bench"} <= set(subcommands)
    for name, subparser in subcommands.items():
        text = subparser.format_help()
        assert text.startswith("usage: tensorchat"), name
        for option in subparser._actions:
            if option.option_strings and option.help is None:
                pytest.fail(f"tensorchat {name} {option.option_strings[0]} has no help text")


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


def _serve_once(config: Path, home: Path, log: Path) -> tuple[str, str, str]:
    """`tensorchat serve` until ready; one chat request; Ctrl-C.

    The key and the curl line it printed, and all it wrote (its children's logs included).
    """
    from openai import OpenAI

    env = {
        **os.environ,
        "HOME": str(home),  # the development key is kept in ~/.config/tensorchat
        "TENSORCHAT_KEYS_FILE": str(home / "no-keys.json"),
        "TENSORCHAT_API_KEYS": "",
    }
    grpc_port, http_port = free_port(), free_port()
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorchat",
                "serve",
                "--models",
                str(config),
                "--grpc-port",
                str(grpc_port),
                "--http-port",
                str(http_port),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    try:
        key = curl = None
        printed: list[str] = []
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        for line in process.stdout:
            printed.append(line)
            if "development API key" in line:
                key = line.rsplit(" ", 1)[-1].strip()
            if line.startswith("try: curl"):
                curl = line
                break
            assert time.monotonic() < deadline, "serve never printed its key"
        assert key and key.startswith("tc-dev-") and curl
        client = OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key=key)
        reply = client.chat.completions.create(
            model="TINY", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
        )
        assert reply.usage is not None and reply.usage.completion_tokens <= 3
        process.send_signal(signal.SIGINT)
        printed.append(process.communicate(timeout=30)[0])
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
    return key, curl, "".join(printed) + log.read_text()


@pytest.mark.slow
def test_serve_runs_the_stack_keeps_its_key_and_stops_on_ctrl_c(
    tiny_qwen2_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(
        yaml.safe_dump(
            {"models": [{"id": "tiny", "checkpoint": str(tiny_qwen2_dir), "context_length": 256}]}
        )
    )
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    key, curl, output = _serve_once(config, tmp_path, first_log)
    # The key is kept for the owner only, and the next start uses it again.
    kept = tmp_path / ".config" / "tensorchat" / "dev-key"
    assert kept.read_text().strip() == key
    assert kept.stat().st_mode & 0o777 == 0o600
    assert _serve_once(config, tmp_path, second_log)[0] == key
    # The line to paste streams, with a bound on the answer.
    assert "curl -N " in curl and '"stream": true' in curl and '"max_tokens": ' in curl
    # serve learns readiness without polling /health: no such lines in the access log.
    assert "method=POST path=/v1/chat/completions" in output  # the access log is on
    assert "/health" not in output
    # No library noise: transformers' deprecation warnings, its weight-loading tqdm bars.
    assert "Warning" not in output and "it/s]" not in output


def test_serve_fails_naming_a_port_another_server_holds(tmp_path: Path) -> None:
    import http.server
    import threading

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # another server that answers /health with 200
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    http_port = other.server_address[1]
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "tensorchat",
                "serve",
                "--grpc-port",
                str(free_port()),
                "--http-port",
                str(http_port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TENSORCHAT_API_KEYS": "k"},
        )
    finally:
        other.shutdown()
    assert run.returncode != 0
    assert "ready" not in run.stdout
    assert f"HTTP port {http_port} on 127.0.0.1 is already in use" in run.stderr
