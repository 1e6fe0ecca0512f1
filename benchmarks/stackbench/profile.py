"""py-spy sampling of the servers and the per-function summary of its raw stacks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Sample a server with py-spy (if installed) while the load runs."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return None
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "50",
         "--format", "raw", "--output", str(out), "--nonblocking", "--gil"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _frame(name: str) -> str:
    # "func (path/file.py:123)" -> "func (path/file.py)": lines of one function add up.
    head, _, tail = name.rpartition(":")
    return head + ")" if tail.endswith(")") and tail[:-1].isdigit() else name


def profile_summary(raw: Path, limit: int = 20) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive time per function from py-spy's raw (collapsed stacks) output."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    if not total:
        return {"self": [], "inclusive": []}

    def ranked(counts: dict[str, int], skip_roots: bool) -> list[tuple[str, float]]:
        # Frames on (nearly) every stack are the event loop's own; they say nothing.
        items = [(k, v / total) for k, v in counts.items() if not (skip_roots and v / total > 0.9)]
        return sorted(items, key=lambda kv: -kv[1])[:limit]

    return {"self": ranked(own, False), "inclusive": ranked(inclusive, True)}
