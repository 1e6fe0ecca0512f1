"""Run build steps one after another: subprocesses with streamed output, progress and timings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from enginebuild.plan import Step

# Lines of a failed tool's output repeated in the error, so CI logs show the cause up front.
TAIL_LINES = 20


class StepFailed(RuntimeError):
    def __init__(self, step: Step, message: str) -> None:
        super().__init__(f"step '{step.name}' failed: {message}")
        self.step = step


class Runner:
    """Runs a plan's steps in order; in-process steps call the action registered by name.

    Child output is streamed line by line with a prefix, so a multi-hour trtllm-build stays
    observable in `kubectl logs` and CI; the runner itself adds no buffering.
    """

    def __init__(
        self,
        out: TextIO | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.out = out or sys.stdout
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run(
        self, steps: Sequence[Step], actions: Mapping[str, Callable[[], None]] | None = None
    ) -> None:
        actions = actions or {}
        total = len(steps)
        started = time.monotonic()
        for i, step in enumerate(steps, 1):
            self.say(f"[{i}/{total}] {step.name}: {step.description}")
            t0 = time.monotonic()
            if step.argv is None:
                action = actions.get(step.name)
                if action is None:
                    raise StepFailed(step, "no in-process action registered for it")
                try:
                    action()
                except StepFailed:
                    raise
                except Exception as exc:
                    raise StepFailed(step, f"{type(exc).__name__}: {exc}") from exc
            else:
                self.say(f"    $ {step.shell()}")
                self._run_command(step)
            self.say(f"[{i}/{total}] {step.name} done in {time.monotonic() - t0:.1f}s")
        self.say(f"all {total} steps done in {time.monotonic() - started:.1f}s")

    def _run_command(self, step: Step) -> None:
        assert step.argv is not None
        env = {**self.env, **step.env}
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        try:
            proc = subprocess.Popen(
                step.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                bufsize=1,
                env=env,
                cwd=self.cwd,
            )
        except FileNotFoundError as exc:
            raise StepFailed(
                step,
                f"{step.argv[0]} not found on PATH; run the build inside the builder image "
                "(build/Dockerfile), which provides trtllm-build and the TensorRT-LLM 1.2.1 "
                "example wrappers",
            ) from exc
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                self.say(f"    | {line}")
            code = proc.wait()
        except BaseException:
            # Ctrl-C or a failure while streaming: never leave a GPU-holding child behind.
            proc.kill()
            proc.wait()
            raise
        if code != 0:
            detail = "\n".join(tail)
            raise StepFailed(
                step, f"{step.argv[0]} exited with status {code}; last output:\n{detail}"
            )
