"""How often a stream may send a message: its share of the servicer's message budget.

Every stream message costs the same CPU (grpc write, protobuf, a syscall) whatever it
carries, and one event loop writes them all, so the servicer caps the messages per second
of all streams together. While streams make tokens slower than their share, every token goes
out at once; past it, a stream's tokens share its messages. The engine never holds the first
token or a finish (`inference.engines.channel.OutputChannel`).
"""

from __future__ import annotations

# About 0.4 of a core at the ~60 µs of CPU a gRPC message costs here: 256 streams get one
# message each per 40 ms, and the loop keeps headroom for new requests (benchmarks/README.md).
DEFAULT_MESSAGES_PER_SECOND = 6400.0


def stream_interval(running_streams: int, messages_per_second: float) -> float:
    """The least seconds between two messages of one stream (0: no pacing)."""
    if messages_per_second <= 0:
        return 0.0
    return running_streams / messages_per_second
