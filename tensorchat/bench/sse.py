"""A minimal incremental Server-Sent Events parser: bytes in, `data` payloads out.

Only what a chat-completions stream needs from the WHATWG event-stream format: lines end
with LF, CRLF or CR (possibly split across network reads); `data:` fields of one event are
joined with LF; a blank line dispatches the event; comments (`:`) and the `event`, `id` and
`retry` fields are ignored; an event the stream cuts off before its blank line is dropped.
It works on bytes and never decodes text, because the client must stay cheap at tens of
thousands of events per second.
"""

from __future__ import annotations


class SSEParser:
    """Feed raw body chunks; get back the complete events' data payloads, in order."""

    __slots__ = ("_buffer", "_data", "_held_cr")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        # A CR that ended the previous chunk: the line ended, but an LF may still follow it.
        self._held_cr = False

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._held_cr:
            self._held_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):
                self._held_cr = True
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data = self._data = []
            elif line.startswith(b"data"):
                if len(line) == 4:
                    data.append(b"")
                elif line[4] == 0x3A:  # "data:"
                    value = line[5:]
                    data.append(value[1:] if value.startswith(b" ") else value)
                # else: a field named e.g. "dataset", which is not "data": ignored
        return events
