"""The GPU check's parity rule and how it walks the reference along the candidate's path."""

from __future__ import annotations

import pytest

from tests.gpu.check.compare import Step, compare_greedy, reference_along, summarize


def steps(*pairs: tuple[int, float]) -> list[Step]:
    return [Step(token, logprob) for token, logprob in pairs]


def test_equal_tokens_within_tolerance_pass() -> None:
    result = compare_greedy(steps((5, -9.70), (6, -9.80)), steps((5, -9.705), (6, -9.80)))
    assert result.ok
    assert (result.compared, result.ties) == (2, 0)
    assert result.max_logprob_error == pytest.approx(0.005)


def test_a_logprob_off_by_more_than_the_tolerance_fails_naming_the_position() -> None:
    # What an executor reporting renormalised greedy logprobs (0.0) would show.
    result = compare_greedy(steps((5, -9.7), (6, 0.0)), steps((5, -9.7), (6, -9.8)))
    assert not result.ok
    assert result.detail.startswith("token 1: logprob of 6 is 0.0000 in candidate, -9.8000")


def test_a_different_token_that_the_reference_ranks_as_a_near_tie_passes() -> None:
    reference = [Step(7, -9.700, {7: -9.700, 8: -9.703, 9: -9.9})]
    result = compare_greedy(steps((8, -9.701)), reference)
    assert result.ok
    assert result.ties == 1


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ({7: -9.70, 9: -9.9}, "has no 8 in its top 2"),
        ({7: -9.70, 8: -9.75}, "gives 8 -9.7500: not a tie within 0.01"),
    ],
)
def test_a_different_token_that_is_no_tie_fails(top: dict[int, float], expected: str) -> None:
    result = compare_greedy(steps((8, -9.75)), [Step(7, -9.70, top)], names=("trtllm", "torch"))
    assert not result.ok
    assert result.detail.startswith("token 0: trtllm chose 8 (-9.7500), torch chose 7 (-9.7000)")
    assert expected in result.detail


def test_a_tie_still_needs_the_candidates_logprob_to_match_the_references() -> None:
    reference = [Step(7, -9.700, {7: -9.700, 8: -9.703})]
    assert not compare_greedy(steps((8, -9.8)), reference).ok


def test_missing_or_extra_positions_fail() -> None:
    assert not compare_greedy([], []).ok
    assert not compare_greedy(steps((1, -1.0)), []).ok


def test_summarize_reports_the_first_failing_prompt_or_the_totals() -> None:
    good = compare_greedy(steps((5, -9.7)), steps((5, -9.7)))
    bad = compare_greedy(steps((5, -9.7)), steps((5, -1.0)))
    assert summarize([good, bad]).detail.startswith("prompt 1: token 0:")
    total = summarize([good, good])
    assert total.ok and total.compared == 2
    assert not summarize([]).ok


async def test_reference_is_asked_again_on_the_candidates_path_after_each_difference() -> None:
    # The reference continues 10, 11, 12, ... from any prefix; the candidate took 99 at 1.
    asked: list[tuple[list[int], int]] = []

    async def generate(prefix: list[int], count: int) -> list[Step]:
        asked.append((prefix, count))
        start = 10 + len(prefix) - 2
        return [Step(start + i, -1.0) for i in range(count)]

    along = await reference_along([1, 2], [10, 99, 12, 13], generate)
    assert [s.token for s in along] == [10, 11, 12, 13]
    assert asked == [([1, 2], 4), ([1, 2, 10, 99], 2)]


async def test_a_reference_that_generates_nothing_is_an_error() -> None:
    async def generate(prefix: list[int], count: int) -> list[Step]:
        return []

    with pytest.raises(RuntimeError, match="generated nothing after 0 tokens"):
        await reference_along([1], [2], generate)
