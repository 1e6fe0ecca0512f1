"""A real `redis-server` for tests: a random loopback port, a temp dir, no persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

import pytest

REDIS_SERVER = "redis-server"


def require_redis_server() -> str:
    """The redis-server binary, or a skip that says how to get it."""
    path = shutil.which(REDIS_SERVER)
    if path is None:
        pytest.skip(
            "redis-server is not installed (apt-get install -y redis-server; .ci/run and "
            "scripts/setup --dev install it)"
        )
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """`redis-server` on 127.0.0.1:<free port> in `directory`, until `stop()` or `kill()`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        binary = require_redis_server()
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--save", "", "--appendonly", "no"]  # fmt: skip
        self._log = (self.directory / "redis.log").open("wb")
        self._process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.log_tail()}")
            time.sleep(0.05)
        return self

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def log_tail(self) -> str:
        return (self.directory / "redis.log").read_text(errors="replace")[-2000:]

    def kill(self) -> None:
        """SIGKILL, as when Redis' host dies: clients see refused connections from now on."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._close_log()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
