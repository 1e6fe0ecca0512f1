"""Waiting for something another thread or process does, without asserting how long it takes."""

from __future__ import annotations

import time
from collections.abc import Callable

# A bound, not an expectation: only a change that never happens should reach it.
SAFETY_S = 20.0


def eventually(condition: Callable[[], bool], what: str = "the condition") -> None:
    """Polls `condition` until it holds; fails (naming `what`) only after SAFETY_S."""
    deadline = time.monotonic() + SAFETY_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)
