"""StopMatcher: held-back prefixes, earliest completion, multiple and overlapping stops."""

from __future__ import annotations

from inference.text import StopMatcher
from tests.support.text_checks import run


def test_stop_split_across_many_pushes() -> None:
    matcher = StopMatcher(["###"])
    assert matcher.push("abc#") == ("abc", None)
    assert matcher.push("#") == ("", None)
    assert matcher.push("#tail") == ("", "###")


def test_prefix_that_turns_out_not_to_match_is_released() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.push("go ST") == ("go ", None)
    assert matcher.push("O") == ("", None)
    assert matcher.push("P!") == ("", "STOP")
    matcher = StopMatcher(["STOP"])
    assert matcher.push("go STO") == ("go ", None)
    assert matcher.push("NE") == ("STONE", None)
    assert matcher.flush() == ""


def test_text_after_the_stop_is_never_returned() -> None:
    matcher = StopMatcher(["</answer>"])
    assert matcher.push("42</answer> and more") == ("42", "</answer>")
    assert matcher.push("later text") == ("", None)
    assert matcher.flush() == ""


def test_earliest_match_wins_among_multiple_stops() -> None:
    assert run(["world", "lo w"], ["hello world"]) == ("hel", "lo w")
    assert run(["b", "a"], ["xxab"]) == ("xx", "a")
    # The stop that completes first wins, even if a longer one started earlier.
    assert run(["xabc", "ab"], ["xabc"]) == ("x", "ab")
    # Completing at the same character: the one that started earlier.
    assert run(["abc", "bc"], ["zabc"]) == ("z", "abc")


def test_overlapping_stops_hold_the_longest_possible_prefix() -> None:
    matcher = StopMatcher(["aab", "ab"])
    assert matcher.push("xaa") == ("x", None)  # "aa" could start "aab"
    assert matcher.push("a") == ("a", None)  # "aaa": only the last "aa" can still match
    assert matcher.push("b") == ("", "aab")


def test_self_overlapping_stop() -> None:
    # "abab" inside "abababx": a naive matcher that drops the held prefix on mismatch misses it.
    assert run(["ababx"], ["ab", "ab", "ab", "x"]) == ("ab", "ababx")


def test_flush_returns_held_text_when_no_match() -> None:
    matcher = StopMatcher(["<|end|>"])
    assert matcher.push("done <|en") == ("done ", None)
    assert matcher.flush() == "<|en"
    assert matcher.flush() == ""


def test_no_stops_and_empty_stops_pass_text_through() -> None:
    assert StopMatcher([]).push("anything") == ("anything", None)
    assert StopMatcher([""]).push("anything") == ("anything", None)


def test_multibyte_and_emoji_stops() -> None:
    assert run(["🛑"], ["go ", "🛑", " no"]) == ("go ", "🛑")
    assert run(["終わり"], ["これで終", "わり です"]) == ("これで", "終わり")
