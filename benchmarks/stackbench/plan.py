"""What one benchmark level runs: the load, the engine's pace, the machine's layout."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


API_KEY = "stack-bench-key"
MODEL = "synthetic"
POINTS = ("engine", "fake", "grpc", "rest")
# The servers are started with the real `tensorchat` command, as an operator would.
TENSORCHAT = (sys.executable, "-m", "tensorchat", "--log-level", "warning")


@dataclass(frozen=True)
class Plan:
    streams: int
    rate: float
    output_tokens: int
    prompt_tokens: int
    duration: float
    warmup: float
    workers: int
    tick_ms: float
    # The inference service's --max-messages-per-second (None: its default).
    messages_per_second: float | None = None
    # The inference service's --min-stream-interval-ms (None: its default).
    min_stream_interval_ms: float | None = None
    # Seconds over which the streams start (0: all at once, then in lockstep waves).
    ramp_up: float = 0.0
    # Cores a separate busy process keeps busy throughout (see busy_neighbour).
    neighbour_cores: float = 0.0
    # The inference service alone on one CPU, everything else on the others (see cpu_layout).
    pin: bool = False

    @property
    def nominal(self) -> float:
        return self.streams * self.rate
