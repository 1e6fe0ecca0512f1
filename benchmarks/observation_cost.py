#!/usr/bin/env python3
"""What the service's record of one request costs: CPU µs per `RequestObservation` with metrics
on (one output of one token, one finish, the end; tracing off, the access log below its level).

It imports `inference` from wherever PYTHONPATH points first, so the same script times two
checkouts; alternate them on a shared machine:
  PYTHONPATH=/tmp/base .venv/bin/python benchmarks/observation_cost.py
  PYTHONPATH=$PWD .venv/bin/python benchmarks/observation_cost.py
"""

from __future__ import annotations

import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any

from inference.engines.base import SequenceOutput
from inference.metrics import InferenceMetrics
from inference.observation import RequestObservation
from tensorchat.v1 import inference_pb2 as pb

MODEL = SimpleNamespace(id="m")
FINISHED = pb.Finished(reason=pb.FINISH_REASON_LENGTH, usage=pb.Usage(completion_tokens=1))


def one_request(metrics: InferenceMetrics) -> None:
    observation = RequestObservation(pb.GenerateRequest(model="m", request_id="r"), metrics)
    engine_request = SimpleNamespace(timings=None, request_id="r", params=SimpleNamespace(n=1))
    plan: Any = SimpleNamespace(engine_request=engine_request, model=MODEL, prompt_tokens=20)
    observation.planned(plan)
    observation.timings.scheduled = observation.timings.arrived
    observation.outputs([SequenceOutput(0, [5])])
    observation.finished(FINISHED)
    observation.end()


def main() -> int:
    metrics = InferenceMetrics([])
    figures = []
    for _ in range(7):
        start = time.process_time()
        for _ in range(5000):
            one_request(metrics)
        figures.append((time.process_time() - start) / 5000 * 1e6)
    print(f"{statistics.median(figures):.1f} CPU µs per request (median of 7 rounds of 5000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
