"""When TensorRT-LLM first scheduled a request: the end of its queueing (RequestTimings).

The executor stamps it itself (`RequestPerfMetrics.TimingMetrics.first_scheduled_time`, a
`std::chrono::steady_clock` time point: cpp/include/tensorrt_llm/executor/types.h, struct
RequestPerfMetrics, read at commit 008b2b8d; TimePoint L437 and TimingMetrics L439-455 at
a98a9061, the version stored now), returned with each Result when the request sets
`OutputConfig.return_perf_metrics` (inference/engines/trtllm/requests.py does). The bindings
hand a steady_clock time point to Python as a `datetime.timedelta` since the clock's epoch
(nanobind/stl/chrono.h, as pybind11's chrono caster; the binding is `def_rw("first_scheduled_time",
...)` in cpp/tensorrt_llm/nanobind/executor/request.cpp, same commit; L765, with the chrono.h
include at L29, at ac456dca, the version stored now). On Linux steady_clock is
CLOCK_MONOTONIC, the clock of `time.monotonic()`, so the value compares with ours directly.
"""

from __future__ import annotations

import time
from typing import Any


def first_scheduled_at(result: Any) -> float:
    """The executor's first-scheduled time of `result`'s request, in time.monotonic() seconds.

    Without perf metrics, or with an unset (epoch) or implausible (future) stamp, it is now:
    the request has surely been scheduled by the time a result for it arrives.
    """
    now = time.monotonic()
    metrics = getattr(result, "request_perf_metrics", None)
    if metrics is None:
        return now
    stamp = metrics.timing_metrics.first_scheduled_time
    seconds = stamp.total_seconds() if hasattr(stamp, "total_seconds") else float(stamp)
    return seconds if 0.0 < seconds <= now else now
