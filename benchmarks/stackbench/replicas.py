"""Inference replicas as child processes on the synthetic engine, for failure drills.

Each replica is a real `tensorchat inference` process, so that it can be frozen (SIGSTOP),
killed (SIGKILL), drained (SIGTERM) and restarted on its port, as an operator or a crash
would; the reliability tests and `make soak` drive them.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil

from benchmarks.stackbench.plan import MODEL, TENSORCHAT
from benchmarks.stackbench.servers import default_checkpoint, free_port, grpc_ready, wait_until


def write_synthetic_config(
    directory: Path, *, rate: float, tick_ms: float = 5.0, max_batch_size: int | None = None
) -> Path:
    """A models config serving the synthetic engine as model `MODEL` at `rate` tokens/s, with
    at most `max_batch_size` choices running at once (None: no limit)."""
    options = f"tokens_per_second: {rate}, tick_ms: {tick_ms}"
    if max_batch_size is not None:
        options += f", max_batch_size: {max_batch_size}"
    path = directory / "models.yaml"
    path.write_text(
        "models:\n"
        f"  - id: {MODEL}\n"
        "    engine: synthetic\n"
        f"    checkpoint: {default_checkpoint()}\n"
        f"    options: {{{options}}}\n"
    )
    return path


class Replica:
    """One `tensorchat inference` process on a fixed port; `start` again after it ended."""

    def __init__(
        self,
        name: str,
        models: Path,
        work: Path,
        *,
        shutdown_grace_s: float = 2.0,
        waiting_interval_s: float | None = None,
    ):
        self.name = name
        self.port = free_port()
        self._models = models
        self._log = work / f"{name}.log"
        self._grace = shutdown_grace_s
        self._waiting_interval_s = waiting_interval_s  # None: the service's default
        self.proc: psutil.Popen | None = None
        self._handle: contextlib.ExitStack | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> Replica:
        from benchmarks.stackbench.servers import process

        args = [
            *TENSORCHAT,
            "inference",
            "--models",
            str(self._models),
            "--port",
            str(self.port),
            "--shutdown-grace",
            str(self._grace),
        ]
        if self._waiting_interval_s is not None:
            args += ["--waiting-interval-s", str(self._waiting_interval_s)]
        self._handle = contextlib.ExitStack()
        self.proc = self._handle.enter_context(process(args, self._log))
        wait_until(lambda: grpc_ready(self.address), self.name, self.proc, self._log, timeout_s)
        return self

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def freeze(self) -> None:
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing drains."""
        self.signal(signal.SIGKILL)
        self.wait()

    def drain(self) -> None:
        """SIGTERM: the service drains running requests for its grace, then exits."""
        self.signal(signal.SIGTERM)

    def wait(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        code = int(self.proc.wait(timeout_s))
        self.stop()
        return code

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()  # a frozen process cannot act on SIGTERM
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@contextlib.contextmanager
def replicas(
    work: Path, count: int, *, rate: float, max_batch_size: int | None = None, **options: float
) -> Iterator[list[Replica]]:
    """`count` started replicas of the synthetic model (`options`: Replica's); all stopped at
    the end."""
    models = write_synthetic_config(work, rate=rate, max_batch_size=max_batch_size)
    started: list[Replica] = []
    try:
        for i in range(count):
            started.append(Replica(f"replica-{i}", models, work, **options).start())
        yield started
    finally:
        for replica in started:
            replica.stop()
