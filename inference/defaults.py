"""Defaults of the service's own settings, shared by the CLI, `ServerOptions` and the servicer.

A light module (no gRPC, no torch) so that `tensorchat inference --help` can show them.
"""

from __future__ import annotations

# Requests running at once across all calls; past it, RESOURCE_EXHAUSTED (the facade retries
# elsewhere or answers 429 `server_overloaded`).
MAX_CONCURRENT_REQUESTS = 1024
# Seconds running requests get to finish on SIGTERM before they are cancelled; a pod's
# terminationGracePeriodSeconds must exceed it (deploy/).
SHUTDOWN_GRACE_S = 30.0
# How often a GenerateMany generation that has sent nothing yet, while its engine works for
# others, gets a `waiting` event (inference.generate_many). Well under the facade's progress
# timeout (30 s by default; keep that at 3x this or more): a generation that starts right
# after a round hears first two rounds later, and the facade's watchdog sweeps once a second.
WAITING_INTERVAL_S = 5.0
# Seconds an engine may hold requests without generating a token before the service calls
# it stalled (inference.engine_watch): grpc.health says NOT_SERVING until it generates again.
# Must exceed the longest prefill with nothing else running; the facade's progress timeout
# (30 s) already ends a request silent that long. 0: off.
ENGINE_STALL_S = 30.0
