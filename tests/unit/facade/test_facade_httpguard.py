"""HeadMeter: a request head's bytes and fields counted from raw chunks, before parsing."""

from __future__ import annotations

import pytest

from facade.httpguard import HeadMeter

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n"


@pytest.mark.parametrize("cut", range(1, len(HEAD) + 4))
def test_a_head_split_anywhere_is_counted_to_its_end_and_no_further(cut: int) -> None:
    data = HEAD + b"body"
    meter = HeadMeter(max_bytes=len(HEAD), max_fields=2)
    assert meter.feed(data[:cut]) is None
    assert meter.feed(data[cut:]) is None
    assert meter.complete and meter.size == len(HEAD)


def test_one_byte_over_the_size_is_refused_and_the_message_names_the_limit() -> None:
    meter = HeadMeter(max_bytes=len(HEAD) - 1, max_fields=10)
    problem = meter.feed(HEAD)
    assert problem is not None and f"{len(HEAD) - 1} bytes" in problem


def test_an_endless_head_is_refused_once_over_the_size() -> None:
    meter = HeadMeter(max_bytes=1024, max_fields=10)
    assert meter.feed(b"GET / HTTP/1.1\r\nX: ") is None
    problems = [meter.feed(b"a" * 100) for _ in range(11)]
    assert problems[:10] == [None] * 10 and problems[10] is not None


def test_fields_are_counted_before_the_head_ends() -> None:
    meter = HeadMeter(max_bytes=1 << 20, max_fields=2)
    assert meter.feed(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n") is None
    problem = meter.feed(b"C: 3\r\n")
    assert problem is not None and "2 header fields" in problem


def test_empty_lines_before_the_request_line_do_not_end_the_count() -> None:
    meter = HeadMeter(max_bytes=64, max_fields=10)
    assert meter.feed(b"\r\n\r\n") is None and not meter.complete
    assert meter.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 100) is not None


def test_restart_counts_the_next_request_from_zero() -> None:
    meter = HeadMeter(max_bytes=len(HEAD), max_fields=2)
    meter.feed(HEAD)
    assert meter.feed(b"x" * 1000) is None  # the body: not counted
    meter.restart()
    assert meter.feed(HEAD) is None and meter.size == len(HEAD)
