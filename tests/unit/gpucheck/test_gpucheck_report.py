"""The GPU check's output lines, exit status and step timeouts."""

from __future__ import annotations

import io
import threading

import pytest

from tests.gpu.check.report import Check, Report
from tests.gpu.check.run import STEP_TIMEOUTS_S, TOTAL_BUDGET_S, StepTimeout, within


def test_one_line_per_check_status_name_detail() -> None:
    out = io.StringIO()
    report = Report(out)
    report.add("build:tiny/mistral", True, "built and verified in 41s")
    report.add("parity:tiny/qwen2", False, "step failed:\n  line one\n\n  line two\n")
    assert out.getvalue().splitlines() == [
        "PASS build:tiny/mistral built and verified in 41s",
        "FAIL parity:tiny/qwen2 step failed: | line one | line two",
    ]
    assert report.exit_status == 1


def test_exit_status_is_zero_only_when_there_were_checks_and_all_passed() -> None:
    report = Report(io.StringIO())
    assert report.exit_status == 1
    report.add("serve", True, "")
    assert report.exit_status == 0
    assert Check("serve", True, "").line() == "PASS serve"


def test_a_check_name_with_a_space_is_refused() -> None:
    with pytest.raises(ValueError, match="must not contain spaces"):
        Report(io.StringIO()).add("two words", True, "")


def test_the_step_timeouts_fit_the_eight_minute_budget() -> None:
    assert TOTAL_BUDGET_S == 8 * 60
    assert sum(STEP_TIMEOUTS_S.values()) <= TOTAL_BUDGET_S


def test_within_returns_the_result_or_raises_the_error_or_a_timeout() -> None:
    assert within(5, lambda: 42) == 42
    empty: dict[str, int] = {}
    with pytest.raises(KeyError):
        within(5, lambda: empty["missing"])
    never = threading.Event()
    with pytest.raises(StepTimeout, match=r"timed out after 0\.01s"):
        within(0.01, never.wait)
    never.set()
