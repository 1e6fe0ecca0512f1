"""`tune_gc_for_serving`: what both server processes do to the garbage collector once they
have loaded everything."""

from __future__ import annotations

import gc

# Net allocations of tracked objects that start a young collection (CPython's default: 700).
# At 32 requests in flight the facade holds 1,000-2,000 young objects that are all alive:
# with 700, a young collection ran every 35 requests, freed nothing, took 50-600 µs, and
# promoted every live request's objects (10 µs of CPU per short request in process, 5% of
# it: benchmarks/README.md, "Issue 20, sixth session"). At 10,000 the count only grows by
# objects that outlive their request, so a young collection runs when there is something
# to collect.
YOUNG_COLLECTION_THRESHOLD = 10_000


def tune_gc_for_serving() -> None:
    """Moves everything allocated so far out of the garbage collector's reach, and collects
    the young generation only when it has grown by `YOUNG_COLLECTION_THRESHOLD` objects.

    The models, tokenizers and libraries are a huge object graph that never becomes garbage;
    left in the tracked generations, every full collection walks it and stops the event loop
    for 150-280 ms under streaming load (measured, benchmarks/README.md). Freezing it after
    loading brings those pauses down to a few ms, as vLLM does for the same reason.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
