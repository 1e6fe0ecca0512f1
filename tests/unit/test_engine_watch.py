"""inference.engine_watch: when an engine counts as stalled, and when it stops counting so.

Driven by the caller's clock: each `check(now)` is a round of the server's watch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from inference.engine_watch import EngineWatch

STALL_S = 30.0


@dataclass
class StandInEngine:
    generated_tokens: int = 0


@dataclass
class StandInModel:
    id: str
    engine: StandInEngine = field(default_factory=StandInEngine)


class Engines:
    """Two models; the test sets what each engine has generated and holds."""

    def __init__(self) -> None:
        self.a, self.b = StandInModel("a"), StandInModel("b")
        self.holding: dict[str, int] = {"a": 0, "b": 0}
        models = cast(Any, [self.a, self.b])
        self.watch = EngineWatch(models, self.holding.__getitem__, STALL_S, now=0.0)


def rounds(watch: EngineWatch, start: float, end: float, every: float = 5.0) -> bool:
    """The server's rounds from `start` to `end`; whether any changed `stalled`."""
    changed, now = False, start
    while now <= end:
        changed = watch.check(now) or changed
        now += every
    return changed


def test_an_engine_with_requests_and_no_token_for_the_stall_time_is_stalled() -> None:
    engines = Engines()
    engines.holding["a"] = 2
    assert not rounds(engines.watch, 5.0, 29.0)
    assert engines.watch.stalled == frozenset()
    assert engines.watch.check(30.0)  # changed
    assert engines.watch.stalled == {"a"}
    assert not engines.watch.check(35.0)  # no change to report


def test_a_round_long_after_the_last_one_judges_nothing_it_could_not_see() -> None:
    """The process was stopped (SIGSTOP) or its loop blocked for 60 s: its engine could not
    generate either, so the quiet time starts again when it runs."""
    engines = Engines()
    engines.holding["a"] = 1
    engines.watch.check(5.0)
    assert not engines.watch.check(65.0)
    assert engines.watch.stalled == frozenset()
    rounds(engines.watch, 70.0, 90.0)
    assert engines.watch.stalled == frozenset()  # 25 s since it ran again
    engines.watch.check(95.0)
    assert engines.watch.stalled == {"a"}


def test_an_engine_generating_for_anyone_is_never_stalled() -> None:
    engines = Engines()
    engines.holding["a"] = 5
    for second in range(0, 300, 5):
        engines.a.engine.generated_tokens += 1
        engines.watch.check(float(second))
    assert engines.watch.stalled == frozenset()


def test_an_idle_engine_is_not_judged_and_its_quiet_time_starts_with_its_first_request() -> None:
    engines = Engines()
    rounds(engines.watch, 5.0, 100.0)  # idle since 0: nothing to judge
    engines.holding["a"] = 1
    rounds(engines.watch, 105.0, 125.0)
    assert engines.watch.stalled == frozenset()  # 25 s with a request, not 125
    engines.watch.check(130.0)
    assert engines.watch.stalled == {"a"}


def test_a_stalled_engine_stays_stalled_when_its_requests_leave_until_it_generates() -> None:
    engines = Engines()
    engines.holding["a"] = 1
    rounds(engines.watch, 5.0, 30.0)
    assert engines.watch.stalled == {"a"}
    engines.holding["a"] = 0  # the facade's progress timeout cancelled them
    assert not rounds(engines.watch, 35.0, 60.0)
    assert engines.watch.stalled == {"a"}  # nothing has shown it works
    engines.holding["a"] = 1  # a trial request
    engines.a.engine.generated_tokens += 1
    assert engines.watch.check(65.0)
    assert engines.watch.stalled == frozenset()


def test_a_cleared_engine_gets_the_whole_stall_time_again() -> None:
    engines = Engines()
    engines.holding["a"] = 1
    rounds(engines.watch, 5.0, 30.0)
    engines.a.engine.generated_tokens += 1
    engines.watch.check(31.0)
    rounds(engines.watch, 36.0, 56.0)
    engines.watch.check(60.0)
    assert engines.watch.stalled == frozenset()  # 29 s since its token
    engines.watch.check(61.0)
    assert engines.watch.stalled == {"a"}


def test_each_model_is_judged_by_its_own_engine() -> None:
    engines = Engines()
    engines.holding.update(a=1, b=1)
    engines.b.engine.generated_tokens = 7
    rounds(engines.watch, 5.0, 30.0)
    assert engines.watch.stalled == {"a"}
