"""Issue 20's goals, judged on a request-CPU summary: each a ratio or a bound, met or not.

1. The facade's CPU per short request at most 3x the floor's; per stream at most the floor's.
2. The service's CPU per short request (through the facade) halved against the "before" tree.
3. A burst of streams: TTFT p50 under 100 ms and p99 under 250 ms; many streams deliver at
   least 0.95 of the ideal token rate.
4. At low load the per-token cost stays bounded: here, at most `lowload_x` times what a token
   costs the floor at the same low load (the same reference as goal 1). The issue gives no
   number. A token's cost at 8 streams over its cost at 128 is printed beside the goal but not
   judged: it moves with how well the 128-stream phase batches and with the machine's load (the
   floor's own ratio read 1.7x on a quiet machine and 4x on a loaded one).
A goal whose figures are missing (its phase did not run) is left out; one whose figure is
NaN, or whose phase had errors, is not met.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.stackbench.blocks import Summary

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Bounds:
    short_x_floor: float = 3.0
    stream_x_floor: float = 1.0
    inference_x_before: float = 0.5
    burst_ttft_p50_ms: float = 100.0
    burst_ttft_p99_ms: float = 250.0
    delivery: float = 0.95
    lowload_x: float = 2.0


@dataclass(frozen=True)
class Goal:
    number: int
    phase: str
    stack: str
    what: str
    value: float
    op: str
    limit: float
    errors: float = 0.0

    @property
    def met(self) -> bool:
        if self.errors or math.isnan(self.value):
            return False
        return _OPS[self.op](self.value, self.limit)

    def line(self) -> str:
        verdict = "met" if self.met else "NOT MET"
        if self.errors:
            verdict += f" ({self.errors:g} errors)"
        return (
            f"goal {self.number} [{self.stack}] {self.what}: {self.value:.3g}"
            f" (goal {self.op} {self.limit:g}): {verdict}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "goal": self.number,
            "phase": self.phase,
            "stack": self.stack,
            "what": self.what,
            "value": None if math.isnan(self.value) else round(self.value, 4),
            "op": self.op,
            "limit": self.limit,
            "errors": self.errors,
            "met": self.met,
        }


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def judge(
    summary: Summary, stacks: Sequence[str], befores: Sequence[str], bounds: Bounds = Bounds()
) -> list[Goal]:
    """The goals for each stack (its label's figures), goal 2 against each of `befores`."""
    goals: list[Goal] = []

    def fig(phase: str, point: str, name: str) -> float | None:
        figures = summary.get(phase, {}).get(point)
        return None if figures is None else figures.get(name, math.nan)

    def errors(phase: str, *points: str) -> float:
        return sum(fig(phase, p, "errors") or 0.0 for p in points)

    def add(n: int, phase: str, stack: str, what: str, value: float | None, op: str,
            limit: float, *points: str) -> None:  # fmt: skip
        if value is not None:
            goals.append(Goal(n, phase, stack, what, value, op, limit, errors(phase, *points)))

    for stack in stacks:
        for phase, limit, unit in (
            ("short", bounds.short_x_floor, "request"),
            ("streams", bounds.stream_x_floor, "stream"),
        ):
            facade, floor = fig(phase, stack, "facade_us"), fig(phase, "floor", "floor_us")
            if facade is not None and floor is not None:
                what = f"facade CPU per {unit} / the floor's"
                add(1, phase, stack, what, _ratio(facade, floor), "<=", limit, stack, "floor")
        for before in befores:
            if before == stack:
                continue
            now, then = fig("short", stack, "inference_us"), fig("short", before, "inference_us")
            if now is not None and then is not None:
                what = f"inference CPU per short request / {before}'s"
                value = _ratio(now, then)
                add(2, "short", stack, what, value, "<=", bounds.inference_x_before, stack, before)
        p50, p99 = fig("burst", stack, "ttft_p50_ms"), fig("burst", stack, "ttft_p99_ms")
        add(3, "burst", stack, "burst TTFT p50 ms", p50, "<", bounds.burst_ttft_p50_ms, stack)
        add(3, "burst", stack, "burst TTFT p99 ms", p99, "<", bounds.burst_ttft_p99_ms, stack)
        delivered = fig("delivery", stack, "delivered_over_offered")
        what = "delivered / ideal tokens"
        add(3, "delivery", stack, what, delivered, ">=", bounds.delivery, stack)
        floor_low = fig("lowload", "floor", "floor_us_per_token")
        for role in ("facade", "inference"):
            low = fig("lowload", stack, f"{role}_us_per_token")
            if low is not None and floor_low is not None:
                what = f"{role} CPU per token at low load / the floor's"
                value = _ratio(low, floor_low)
                add(4, "lowload", stack, what, value, "<=", bounds.lowload_x, stack, "floor")
    return goals
