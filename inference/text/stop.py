"""Stop-string matching over streamed text, holding back only what could still become a stop."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Finds the first stop string in text that arrives in arbitrary chunks.

    "First" means the stop that completes earliest in the stream; when several complete at
    the same character, the one that starts earliest (the longest) wins. That is what a
    reader seeing one character at a time would decide, so the outcome never depends on
    how the text was chunked. Empty stop strings are ignored.
    """

    __slots__ = ("_done", "_max_len", "_pending", "_prefixes", "_stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops: tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))
        # Every proper prefix of every stop: a text suffix in this set must be held back.
        self._prefixes: frozenset[str] = frozenset(
            stop[:k] for stop in self._stops for k in range(1, len(stop))
        )
        self._max_len = max((len(s) for s in self._stops), default=0)
        self._pending = ""
        self._done = False

    def push(self, text: str) -> tuple[str, str | None]:
        """Returns (text safe to emit now, the matched stop or None)."""
        if self._done:
            return "", None
        if not self._stops:
            return text, None
        buffer = self._pending + text
        match = self._first_match(buffer)
        if match is not None:
            start, stop = match
            self._pending = ""
            self._done = True
            return buffer[:start], stop
        held = self._held_suffix_len(buffer)
        self._pending = buffer[len(buffer) - held :]
        return buffer[: len(buffer) - held], None

    def flush(self) -> str:
        """The held-back text, for a sequence that ended without a match."""
        rest, self._pending = self._pending, ""
        return "" if self._done else rest

    def _first_match(self, buffer: str) -> tuple[int, str] | None:
        best: tuple[int, int, str] | None = None  # (end, start, stop)
        for stop in self._stops:
            # The first occurrence of one stop is also the one that ends first.
            start = buffer.find(stop)
            if start < 0:
                continue
            candidate = (start + len(stop), start, stop)
            if best is None or candidate < best:
                best = candidate
        return None if best is None else (best[1], best[2])

    def _held_suffix_len(self, buffer: str) -> int:
        # Only the pending text plus the new text can start a future match, and a match that
        # starts before the longest suffix that is a stop prefix would make that suffix longer.
        for k in range(min(len(buffer), self._max_len - 1), 0, -1):
            if buffer[-k:] in self._prefixes:
                return k
        return 0
