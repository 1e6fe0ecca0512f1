"""inference.engine_watch: when an engine counts as stalled, when it stops counting so, and
which stalled engines get a probe request.

Driven by the caller's clock: each `check(now)` is a round of the server's watch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from inference.engine_watch import EngineWatch

STALL_S = 30.0


@dataclass
class StandInEngine:
    generated_tokens: int = 0
    requests_held: int = 0


@dataclass
class StandInModel:
    id: str
    engine: StandInEngine = field(default_factory=StandInEngine)


class Engines:
    """Two models; the test sets what each engine has generated and holds."""

    def __init__(self) -> None:
        self.a, self.b = StandInModel("a"), StandInModel("b")
        self.watch = EngineWatch(cast(Any, [self.a, self.b]), STALL_S, now=0.0)

    def rounds(self, start: float, end: float, every: float = 5.0) -> bool:
        """The server's rounds from `start` to `end`; whether any changed `stalled`."""
        changed, now = False, start
        while now <= end:
            changed = self.watch.check(now) or changed
            now += every
        return changed


def test_an_engine_holding_requests_with_no_token_for_the_stall_time_is_stalled() -> None:
    engines = Engines()
    engines.a.engine.requests_held = 2
    assert not engines.rounds(5.0, 30.0)  # first seen holding them at 5
    assert engines.watch.stalled == frozenset()
    assert engines.watch.check(35.0)  # changed
    assert engines.watch.stalled == {"a"}
    assert not engines.watch.check(40.0)  # no change to report


def test_the_quiet_time_counts_from_the_first_round_that_sees_requests_held() -> None:
    """Never less than the stall time: a request that came just after an idle round is judged
    from the next round, so the verdict errs late (by up to a round), never early."""
    engines = Engines()
    engines.rounds(5.0, 100.0)  # idle: nothing to judge
    engines.a.engine.requests_held = 1  # came at, say, 104.9
    engines.rounds(105.0, 130.0)
    assert engines.watch.stalled == frozenset()  # 25 s since 105, however long since 100
    engines.watch.check(135.0)
    assert engines.watch.stalled == {"a"}


def test_after_a_last_token_with_nothing_held_the_quiet_time_waits_for_a_request() -> None:
    """A request that finished (or a probe that cleared it) moves the counter and leaves the
    engine idle: the next request's quiet time starts when a round first sees it held."""
    engines = Engines()
    engines.a.engine.requests_held = 1
    engines.watch.check(5.0)
    engines.a.engine.generated_tokens += 1
    engines.a.engine.requests_held = 0  # its last token, and it is done
    engines.watch.check(10.0)
    engines.a.engine.requests_held = 1  # came at, say, 14.9
    engines.rounds(15.0, 40.0)
    assert engines.watch.stalled == frozenset()  # 25 s since 15, 30 since the token
    engines.watch.check(45.0)
    assert engines.watch.stalled == {"a"}


def test_an_engine_generating_for_anyone_is_never_stalled() -> None:
    engines = Engines()
    engines.a.engine.requests_held = 5
    for second in range(0, 300, 5):
        engines.a.engine.generated_tokens += 1
        engines.watch.check(float(second))
    assert engines.watch.stalled == frozenset()


def test_an_engine_that_holds_nothing_is_not_judged() -> None:
    """A finished request whose client reads slowly is not held: the engine owes nothing."""
    engines = Engines()
    engines.rounds(5.0, 300.0)
    assert engines.watch.stalled == frozenset()


def test_a_round_long_after_the_last_one_judges_nothing_it_could_not_see() -> None:
    """The process was stopped (SIGSTOP) or its loop blocked for 60 s: its engine could not
    generate either, so the quiet time starts again when it runs."""
    engines = Engines()
    engines.a.engine.requests_held = 1
    engines.watch.check(5.0)
    assert not engines.watch.check(65.0)
    assert engines.watch.stalled == frozenset()
    engines.rounds(70.0, 90.0)
    assert engines.watch.stalled == frozenset()  # 25 s since it ran again
    engines.watch.check(95.0)
    assert engines.watch.stalled == {"a"}


def test_a_stalled_engine_stays_stalled_when_its_requests_leave_and_is_probed() -> None:
    engines = Engines()
    engines.a.engine.requests_held = 1
    engines.rounds(5.0, 35.0)
    assert engines.watch.stalled == {"a"}
    assert engines.watch.to_probe() == []  # it holds a request that may still generate
    engines.a.engine.requests_held = 0  # the facade's progress timeout cancelled it
    assert not engines.rounds(40.0, 100.0)
    assert engines.watch.stalled == {"a"}  # nothing has shown it works
    assert engines.watch.to_probe() == [engines.a]
    engines.a.engine.requests_held = 1  # the probe
    assert engines.watch.to_probe() == []
    engines.a.engine.generated_tokens += 1
    assert engines.watch.check(105.0)
    assert engines.watch.stalled == frozenset()
    assert engines.watch.to_probe() == []


def test_a_cleared_engine_gets_the_whole_stall_time_again() -> None:
    engines = Engines()
    engines.a.engine.requests_held = 1
    engines.rounds(5.0, 35.0)
    engines.a.engine.generated_tokens += 1
    engines.watch.check(36.0)
    engines.rounds(41.0, 61.0)
    engines.watch.check(65.0)
    assert engines.watch.stalled == frozenset()  # 29 s since its token
    engines.watch.check(66.0)
    assert engines.watch.stalled == {"a"}


def test_each_model_is_judged_by_its_own_engine() -> None:
    engines = Engines()
    engines.a.engine.requests_held = engines.b.engine.requests_held = 1
    engines.watch.check(5.0)
    engines.b.engine.generated_tokens = 7
    engines.rounds(10.0, 35.0)
    assert engines.watch.stalled == {"a"}
