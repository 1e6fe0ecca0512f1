"""`tensorchat serve`: the whole stack for development, one process per part, supervised.

The inference service and the facade run as separate processes (as in production) so the
facade's HTTP work never competes with the engine loop for one interpreter's GIL. A port
already in use stops it before anything starts; if either part exits, the other is stopped
and the command fails; SIGINT/SIGTERM stop both cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

API_KEYS_ENV_VAR = "TENSORCHAT_API_KEYS"
KEYS_FILE_ENV_VAR = "TENSORCHAT_KEYS_FILE"
# facade/readiness.py's variable (sd_notify's); not imported, to keep `--help` fast.
NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
# Beside the default keys file (facade.settings.DEFAULT_KEYS_FILE), in the user's config dir.
DEV_KEY_FILE = Path("~/.config/tensorchat/dev-key").expanduser()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the inference service and the OpenAI facade together (development)",
        description=(
            "Start the gRPC inference service and the OpenAI-compatible REST facade as two "
            "supervised processes. With no API key configured, a development key is used "
            "(made on first use and kept in ~/.config/tensorchat/dev-key) and printed."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address both parts bind")
    parser.add_argument("--grpc-port", type=int, default=50051, help="gRPC port (default 50051)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument(
        "--models", type=Path, default=None, help="models config file (default: embedded model)"
    )
    parser.add_argument(
        "--keys-file", type=Path, default=None, help="API keys file (see `tensorchat keys`)"
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    env.pop(NOTIFY_SOCKET_ENV, None)  # ours is for the facade only (below)
    dev_key = None
    if not _keys_configured(env, args.keys_file):
        dev_key = development_key(DEV_KEY_FILE)
        env[API_KEYS_ENV_VAR] = dev_key
    python = [sys.executable, "-m", "tensorchat", "--log-level", args.log_level]
    python += ["--log-format", args.log_format]
    inference_cmd = [*python, "inference", "--host", args.host, "--port", str(args.grpc_port)]
    if args.models:
        inference_cmd += ["--models", str(args.models)]
    facade_cmd = [
        *python,
        "facade",
        "--host",
        args.host,
        "--port",
        str(args.http_port),
        "--backends",
        f"{args.host}:{args.grpc_port}",
    ]
    if args.keys_file:
        facade_cmd += ["--keys-file", str(args.keys_file)]

    # A port held by another server would have clients reach that server while this stack
    # failed to start: refuse before starting anything.
    taken = _taken_ports(args.host, {"gRPC": args.grpc_port, "HTTP": args.http_port})
    if taken:
        for what, port in taken:
            flag = "--grpc-port" if what == "gRPC" else "--http-port"
            print(
                f"tensorchat serve: the {what} port {port} on {args.host} is already in use "
                f"(another server?); stop it or choose another port with {flag}",
                file=sys.stderr,
            )
        return 1

    names = ("the inference service", "the facade")

    # The facade says when it is ready on this socket (facade/readiness.py): no /health
    # polls, which would fill its access log and request metrics.
    ready_dir = tempfile.TemporaryDirectory(prefix="tensorchat-serve-")
    ready = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ready.bind(str(Path(ready_dir.name) / "notify"))
    ready.settimeout(0.5)
    children = [
        subprocess.Popen(inference_cmd, env=env),
        subprocess.Popen(facade_cmd, env={**env, NOTIFY_SOCKET_ENV: ready.getsockname()}),
    ]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    shown_host = "localhost" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
    base_url = f"http://{shown_host}:{args.http_port}"
    announced = False
    while all(child.poll() is None for child in children):
        if not announced and _notified_ready(ready):
            announced = True
            print(f"\ntensorchat is ready: OpenAI endpoint {base_url}/v1", flush=True)
            if dev_key:
                print(f"development API key (kept in {DEV_KEY_FILE}): {dev_key}", flush=True)
            print(f"try: {_curl_line(base_url, dev_key)}\n", flush=True)
        elif announced:
            time.sleep(0.5)
    ready.close()
    ready_dir.cleanup()
    if not stopping:
        for name, child in zip(names, children, strict=True):
            if child.poll() is not None:
                print(
                    f"tensorchat serve: {name} exited with code {child.returncode}", file=sys.stderr
                )
        stop(signal.SIGTERM, None)
    codes = [child.wait() for child in children]
    # Stopped by a signal, with both parts stopping cleanly: success. Anything else (a part
    # that died on its own, or one that failed while stopping) is a failure. uvicorn ends a
    # graceful shutdown by re-raising the SIGTERM it caught, so -SIGTERM is clean here too.
    clean = (0, -signal.SIGTERM) if stopping else (0,)
    failed = [code for code in codes if code not in clean]
    if stopping and not failed:
        return 0
    return next(iter(failed), 1)


def _taken_ports(host: str, ports: dict[str, int]) -> list[tuple[str, int]]:
    """The (name, port) pairs that cannot be bound on `host` now."""
    taken = []
    for what, port in ports.items():
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            # As the servers bind: a port in TIME_WAIT is free, one with a listener is not.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                taken.append((what, port))
    return taken


def _keys_configured(env: dict[str, str], keys_file: Path | None) -> bool:
    """Whether any API key exists: dev keys in the environment, or a non-empty keys file."""
    from facade.keys import load_keys
    from facade.settings import DEFAULT_KEYS_FILE

    if env.get(API_KEYS_ENV_VAR):
        return True
    path = keys_file or Path(env.get(KEYS_FILE_ENV_VAR) or DEFAULT_KEYS_FILE).expanduser()
    return path.is_file() and bool(load_keys(path))


def _notified_ready(sock: socket.socket) -> bool:
    """Whether READY=1 arrived within the socket's timeout."""
    try:
        return b"READY=1" in sock.recv(4096).split(b"\n")
    except TimeoutError:
        return False


def _curl_line(base_url: str, key: str | None) -> str:
    """A first request to paste: streamed (-N: curl prints each token as it comes)."""
    body = json.dumps(
        {
            "model": "default",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 64,
            "stream": True,
        }
    )
    return (
        f'curl -N {base_url}/v1/chat/completions -H "Authorization: Bearer {key or "$KEY"}" '
        f"-H \"Content-Type: application/json\" -d '{body}'"
    )


def development_key(path: Path) -> str:
    """The development key in `path` (the user's config dir), made there on first use.

    Kept so that a restart does not break the clients and shells that hold it; the file is
    mode 0600 (only its owner can read the key), as `tensorchat keys` writes the keys file.
    """
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    key = f"tc-dev-{secrets.token_urlsafe(24)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    return key
