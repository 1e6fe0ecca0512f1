"""StopMatcher: held-back prefixes, earliest completion, independence from chunking."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from inference.text import StopMatcher


def run(stops: list[str], chunks: list[str]) -> tuple[str, str | None]:
    """Feeds the chunks and returns (all emitted text, matched stop)."""
    matcher = StopMatcher(stops)
    out = []
    for chunk in chunks:
        text, stop = matcher.push(chunk)
        out.append(text)
        if stop is not None:
            return "".join(out), stop
    out.append(matcher.flush())
    return "".join(out), None


def reference(stops: list[str], text: str) -> tuple[str, str | None]:
    """Character by character: the first position where some stop ends, earliest start."""
    for end in range(1, len(text) + 1):
        for start in range(end):
            if text[start:end] in stops:
                return text[:start], text[start:end]
    return text, None


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


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    stops=st.lists(st.text(alphabet="abc", min_size=1, max_size=4), max_size=4),
    text=st.text(alphabet="abcd", max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=10),
)
def test_any_chunking_gives_the_character_by_character_answer(
    stops: list[str], text: str, cuts: list[int]
) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert run(stops, chunks) == reference(stops, text)
