"""`tensorchat facade` in a process of its own, as an operator starts it, for tests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class FacadeProcess:
    url: str
    log: Path
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def facade_process(
    command: Sequence[str],
    args: Sequence[str],
    directory: Path,
    env: Mapping[str, str],
    ready: Callable[[str], bool],
) -> Iterator[FacadeProcess]:
    """Runs `command facade --port P args` until `ready(url)`; SIGTERM (a clean exit) after."""
    port = free_port()
    log = directory / f"facade-{port}.log"
    argv = [*command, "facade", "--port", str(port), *args]
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=dict(env))
    facade = FacadeProcess(f"http://127.0.0.1:{port}", log, process)
    try:
        deadline = time.monotonic() + 90
        while not ready(facade.url):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the facade never became ready"
            time.sleep(0.2)
        yield facade
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
