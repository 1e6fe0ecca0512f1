"""The parity rule of verify and the GPU check, and how it walks the reference along the path."""

from __future__ import annotations

import pytest

from enginebuild.parity import (
    Generate,
    Step,
    compare_greedy,
    compare_prompts,
    reference_along,
    summarize,
)


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


# --- verify's use of the rule: the torch BF16 reference, a tolerance per weight precision -------


def _reference_from(table: dict[tuple[int, ...], Step]) -> Generate:
    """A reference that answers one step per prefix from `table` (what torch would pick)."""

    async def generate(prefix: list[int], count: int) -> list[Step]:
        return [table[tuple(prefix)]]

    return generate


async def test_verify_passes_an_engine_that_breaks_a_near_tie_the_other_way() -> None:
    from enginebuild.verify import parity_check

    # torch picks 7 at the first position by 0.0004, the engine 8; both then continue with 5.
    reference = _reference_from(
        {
            (1, 2): Step(7, -2.3025, {7: -2.3025, 8: -2.3029, 9: -4.0}),
            (1, 2, 8): Step(5, -0.51, {5: -0.51, 6: -1.9}),
        }
    )
    check = await parity_check([[1, 2]], [steps((8, -2.31), (5, -0.52))], reference, "bf16")
    assert check.ok, check.detail
    assert check.detail == (
        "1 prompts, 2 greedy tokens equal, max |logprob difference| 0.0100, 1 near-tie(s) "
        "(logprob tolerance 0.1 for bf16 weights)"
    )


async def test_verify_fails_an_engine_that_diverges_for_real() -> None:
    from enginebuild.verify import parity_check

    # The engine's 8 is two nats below torch's 7: no tie, whatever arithmetic.
    reference = _reference_from({(1, 2): Step(7, -0.2, {7: -0.2, 8: -2.2})})
    check = await parity_check([[1, 2]], [steps((8, -2.2))], reference, "bf16")
    assert not check.ok
    assert check.detail.startswith(
        "prompt 0: token 0: the engine chose 8 (-2.2000), torch chose 7 (-0.2000) and gives 8 "
        "-2.2000: not a tie within 0.1"
    )


@pytest.mark.parametrize(("weights", "ok"), [("bf16", False), ("fp8", True), ("int4_awq", True)])
async def test_verify_allows_quantized_weights_a_wider_tolerance(weights: str, ok: bool) -> None:
    from enginebuild.verify import parity_check

    reference = _reference_from({(3,): Step(4, -1.0, {4: -1.0, 9: -1.3})})
    check = await parity_check([[3]], [steps((4, -1.3))], reference, weights)
    assert check.ok is ok, check.detail


async def test_the_walk_stops_at_the_first_failed_position_and_prompt() -> None:
    asked: list[list[int]] = []

    async def generate(prefix: list[int], count: int) -> list[Step]:
        asked.append(prefix)
        return [Step(7, -0.1, {7: -0.1})]  # never the candidate's token, never a tie

    result = await compare_prompts([[1], [2]], [steps((8, -3.0), (8, -3.0))] * 2, generate)
    assert not result.ok
    assert result.detail.startswith("prompt 0: token 0: candidate chose 8")
    assert asked == [[1]]
