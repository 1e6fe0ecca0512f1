"""The SSE parser: every line ending, split anywhere, multi-line data, comments, cut-off events."""

from __future__ import annotations

import pytest

from tensorchat.bench.sse import SSEParser

STREAM = (
    b": a comment line\n"
    b'data: {"a":1}\n\n'
    b"event: message\nid: 7\nretry: 100\n"
    b"data: first line\ndata: second line\n\n"
    b"data:no-space\n\n"
    b"data\n\n"
    b"dataset: not a data field\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = [b'{"a":1}', b"first line\nsecond line", b"no-space", b"", b"[DONE]"]


def feed_all(parser: SSEParser, pieces: list[bytes]) -> list[bytes]:
    return [event for piece in pieces for event in parser.feed(piece)]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_parses_whole_stream_with_each_line_ending(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    assert SSEParser().feed(stream) == EVENTS


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_any_split_point_gives_the_same_events(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    for cut in range(len(stream) + 1):
        assert feed_all(SSEParser(), [stream[:cut], stream[cut:]]) == EVENTS, cut


def test_byte_by_byte_crlf() -> None:
    stream = STREAM.replace(b"\n", b"\r\n")
    assert feed_all(SSEParser(), [stream[i : i + 1] for i in range(len(stream))]) == EVENTS


def test_event_without_terminating_blank_line_is_not_dispatched() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: done\n\ndata: cut off") == [b"done"]
    assert parser.feed(b"\n") == []  # the line ended, the event did not
    assert parser.feed(b"\n") == [b"cut off"]


def test_only_one_leading_space_is_stripped() -> None:
    assert SSEParser().feed(b"data:  two spaces\n\n") == [b" two spaces"]
