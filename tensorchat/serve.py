"""`tensorchat serve`: the whole stack for development, one process per part, supervised.

The inference service and the facade run as separate processes (as in production) so the
facade's HTTP work never competes with the engine loop for one interpreter's GIL. If either
exits, the other is stopped; SIGINT/SIGTERM stop both cleanly.
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
        stop(signal.SIGTERM, None)
    codes = [child.wait() for child in children]
    return 0 if stopping else max(codes, key=abs) or 1


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
