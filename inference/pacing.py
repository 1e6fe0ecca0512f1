"""How often a stream may send a message: its share of the servicer's message budget.

Every stream message costs the same CPU (grpc write, protobuf, a syscall) whatever it
carries, and one event loop writes them all, so the servicer caps the messages per second
of all streams together. While streams make tokens slower than their share, every token goes
out at once; past it, a stream's tokens share its messages. The engine never holds the first
token or a finish (`inference.engines.channel.OutputChannel`).
"""

from __future__ import annotations

# 256 streams get one message each per 40 ms. At the ~100 µs of service CPU a message costs
# here all told (gRPC write, protobuf, detokenizing, the engine's hand-over) that is 0.6-0.8
# of the loop's one core; 3200 leaves more headroom for new requests at twice the interval
# (measured in benchmarks/README.md).
DEFAULT_MESSAGES_PER_SECOND = 6400.0

# GenerateMany (inference.multiplex) holds deltas this long so that generations share a
# write. At 256 paced streams (6,400 messages/s) a write carries ~13 of them; it adds at
# most this much to the 40 ms between two messages of a stream, and nothing to the TTFT.
DEFAULT_FLUSH_INTERVAL_S = 0.002


def stream_interval(running_streams: int, messages_per_second: float) -> float:
    """The least seconds between two messages of one stream (0: no pacing)."""
    if messages_per_second <= 0:
        return 0.0
    return running_streams / messages_per_second
