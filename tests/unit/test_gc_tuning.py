"""tensorchat.freeze: the collector settings both servers take once loaded."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tensorchat.freeze import YOUNG_COLLECTION_THRESHOLD, tune_gc_for_serving


@pytest.fixture
def restored_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def test_loaded_objects_are_frozen_and_the_young_generation_waits_for_real_growth(
    restored_thresholds: tuple[int, int, int],
) -> None:
    gc.set_threshold(700, 11, 12)
    loaded = [object() for _ in range(10)], {"a": [1, 2]}
    frozen_before = gc.get_freeze_count()

    tune_gc_for_serving()

    assert gc.get_freeze_count() > frozen_before
    collectable = {id(o) for o in gc.get_objects()}  # the permanent generation is not listed
    assert not any(id(x) in collectable for x in (loaded, *loaded))
    # Only the young generation's threshold changes; the older two are CPython's (or the
    # operator's) own.
    assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, 11, 12)


def test_live_requests_objects_no_longer_start_young_collections(
    restored_thresholds: tuple[int, int, int],
) -> None:
    """What the threshold is for: a few thousand young objects that stay alive (32 requests
    in flight hold 1,000-2,000) start no collection, where CPython's 700 started several."""
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 0:
            collections.append(1)

    def hold_live_objects() -> int:
        gc.collect()
        collections.clear()
        gc.callbacks.append(count)
        try:
            alive = [[i] for i in range(3000)]
        finally:
            gc.callbacks.remove(count)
        assert len(alive) == 3000
        return len(collections)

    gc.set_threshold(700, 10, 10)
    assert hold_live_objects() >= 4
    tune_gc_for_serving()
    assert hold_live_objects() == 0
