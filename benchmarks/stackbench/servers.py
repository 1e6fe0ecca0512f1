"""The servers under test as child processes: start, stop, readiness, the models config."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from benchmarks.stackbench.plan import API_KEY, MODEL, REPO, TENSORCHAT, Plan


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def process(
    args: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    cpus: set[int] | None = None,
) -> Iterator[psutil.Popen]:
    """Start a server process in `cwd` (its tree's packages come first on sys.path), on
    `cpus` if given (else where this process may run); on exit, SIGTERM it (then SIGKILL)
    by its own pid."""
    handle = log.open("w")
    proc = psutil.Popen(
        args,
        cwd=cwd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        # Set in the child before exec, so that every thread the server starts inherits it.
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except psutil.TimeoutExpired:
                proc.kill()
        handle.close()


def wait_until(check: Any, what: str, proc: psutil.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def port_open(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:`port` (raises while nothing does)."""
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    return True


def grpc_ready(address: str, model: str = MODEL) -> bool:
    import grpc

    from tensorchat.v1 import inference_pb2 as pb
    from tensorchat.v1 import inference_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        models = pb_grpc.InferenceStub(channel).ListModels(pb.ListModelsRequest(), timeout=2)
        return any(m.id == model for m in models.models)


def grpc_generated_tokens(address: str) -> Callable[[], int]:
    """Reads the inference service's generated-token counters (all models) over GetStats."""
    import grpc

    from tensorchat.v1 import inference_pb2 as pb
    from tensorchat.v1 import inference_pb2_grpc as pb_grpc

    stub = pb_grpc.InferenceStub(grpc.insecure_channel(address))

    def read() -> int:
        stats = stub.GetStats(pb.GetStatsRequest(), timeout=2)
        return sum(model.generated_tokens for model in stats.models)

    return read


def http_ready(url: str) -> bool:
    import httpx

    response = httpx.get(f"{url}/models", headers={"authorization": f"Bearer {API_KEY}"})
    return response.status_code == 200 and MODEL in response.text


def default_checkpoint() -> Path:
    """The embedded default model's checkpoint dir: the synthetic model borrows its tokenizer."""
    from inference.engines.torch.loader import default_model_gguf, prepare_gguf_checkpoint

    return prepare_gguf_checkpoint(default_model_gguf())


def write_models_config(directory: Path, checkpoint: Path, plan: Plan) -> Path:
    return write_synthetic_models(directory, checkpoint, {MODEL: plan.rate}, plan.tick_ms)


def write_synthetic_models(
    directory: Path, checkpoint: Path, rates: Mapping[str, float], tick_ms: float
) -> Path:
    """A models config serving the synthetic engine under each id at its tokens/s per stream.

    A model's pace is its config's, so a benchmark whose phases run at several rates serves
    one model per rate from one process.
    """
    lines = ["models:"]
    for model, rate in rates.items():
        lines += [
            f"  - id: {model}",
            "    engine: synthetic",
            f"    checkpoint: {checkpoint}",
            f"    options: {{tokens_per_second: {rate}, tick_ms: {tick_ms}}}",
        ]
    path = directory / "models.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def started(
    stack: contextlib.ExitStack,
    args: list[str],
    work: Path,
    label: str,
    ready: Callable[[], bool],
    timeout: float,
    *,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
) -> psutil.Popen:
    """A server process (`process`) that `ready()` says is serving; its log is work/LABEL.log
    and it is stopped when `stack` closes."""
    log = work / f"{label}.log"
    proc = stack.enter_context(process(args, log, env, cwd=cwd, cpus=cpus))
    wait_until(ready, label, proc, log, timeout)
    return proc


def start_inference(
    stack: contextlib.ExitStack,
    models: Path,
    work: Path,
    *,
    label: str = "inference",
    cwd: Path = REPO,
    cpus: set[int] | None = None,
    extra_args: Sequence[str] = (),
    model: str = MODEL,
) -> tuple[psutil.Popen, str]:
    """`tensorchat inference` of the tree at `cwd` on a free port, ready (it lists `model`);
    stopped with `stack`. Returns the process and its gRPC address."""
    port = free_port()
    args = [*TENSORCHAT, "inference", "--models", str(models), "--port", str(port), *extra_args]
    address = f"127.0.0.1:{port}"
    proc = started(
        stack, args, work, label, lambda: grpc_ready(address, model), 300, cwd=cwd, cpus=cpus
    )
    return proc, address


def start_facade(
    stack: contextlib.ExitStack,
    backend: str,
    work: Path,
    *,
    label: str = "facade",
    cwd: Path = REPO,
    env: Mapping[str, str] | None = None,
) -> tuple[psutil.Popen, str]:
    """`tensorchat facade` of the tree at `cwd` in front of `backend`, with the benchmark's API
    key, ready; stopped with `stack`. Returns the process and its base URL (…/v1)."""
    port = free_port()
    args = [*TENSORCHAT, "facade", "--backends", backend, "--port", str(port)]
    keys = {"TENSORCHAT_API_KEYS": API_KEY, "TENSORCHAT_KEYS_FILE": str(work / "keys.json")}
    url = f"http://127.0.0.1:{port}/v1"
    env = {**keys, **(env or {})}
    return started(stack, args, work, label, lambda: http_ready(url), 120, cwd=cwd, env=env), url


def start_floor(
    stack: contextlib.ExitStack, work: Path, tokens_per_second: float
) -> tuple[psutil.Popen, str]:
    """The floor server (benchmarks/stackbench/floor.py) on a free port, ready; stopped with
    `stack`. Returns the process and its base URL (…/v1)."""
    port = free_port()
    args = [sys.executable, "-m", "benchmarks.stackbench.floor", "--port", str(port),
            "--tokens-per-second", str(tokens_per_second)]  # fmt: skip
    proc = started(stack, args, work, "floor", lambda: port_open(port), 60)
    return proc, f"http://127.0.0.1:{port}/v1"
