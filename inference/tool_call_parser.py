"""Tool calls out of a choice's streamed text, as protocol ToolCallDeltas.

The grammar (tool_grammar.py) makes the model write calls exactly as the format's `CallSyntax`
says, so this reads that syntax literally instead of guessing over free text: text before the
trigger is the answer's text; after it, each call's name becomes the call's first delta
(index, a new id, name, arguments "") and its JSON arguments stream on as fragments. Nothing
from the trigger on ever reaches the text. Whitespace that only separates text from calls is
dropped, so a choice that only calls tools has no text at all.

Output that leaves the syntax (possible only without the grammar) ends the call reading: the
rest is passed on as text.
"""

from __future__ import annotations

from collections.abc import Callable

from inference.text.tool_format import CALL_CLOSE, CALL_NAME_END, CALL_OPEN, CallSyntax
from tensorchat.v1 import inference_pb2 as pb

_TEXT, _LITERAL, _NAME, _ARGUMENTS, _AFTER_CALL = range(5)


class ToolCallParser:
    """Splits one choice's text into answer text and tool-call deltas, chunk by chunk."""

    def __init__(self, syntax: CallSyntax, new_id: Callable[[], str]) -> None:
        self._syntax = syntax
        self._new_id = new_id
        # The grammar matches the trigger as text (tool_grammar.py): a trigger token, or its
        # text written in ordinary tokens, both start the calls.
        self._text_trigger = syntax.trigger
        self.trigger_token = syntax.trigger_token
        self.calls = 0  # calls started so far
        self._state = _TEXT
        self._pending = ""  # text held back: a possible trigger start, or trailing whitespace
        self._expect = ""  # _LITERAL: what must come next
        self._then = _TEXT  # _LITERAL: the state after it
        self._name = ""
        self._depth = 0  # _ARGUMENTS: open brackets
        self._in_string = False
        self._escaped = False
        self._text: list[str] = []
        self._deltas: list[pb.ToolCallDelta] = []

    # -- input -------------------------------------------------------------------------

    def push(self, text: str) -> tuple[str, list[pb.ToolCallDelta]]:
        """Returns (answer text safe to show now, new call deltas)."""
        pos = 0
        while pos < len(text):
            if self._state == _TEXT:
                pos = self._read_text(text, pos)
            else:
                self._read_call_char(text[pos])
                pos += 1
        return self._take()

    def push_trigger_token(self) -> tuple[str, list[pb.ToolCallDelta]]:
        """The model wrote the format's trigger token (it decodes to no text)."""
        if self._state == _TEXT:
            self._start_block()
        return self._take()

    def finish(self) -> tuple[str, list[pb.ToolCallDelta]]:
        """At the end of the choice: held text that turned out to be text."""
        if self._state == _TEXT and (self._pending.strip() or not self.calls):
            self._text.append(self._pending)
        self._pending = ""
        return self._take()

    # -- text --------------------------------------------------------------------------

    def _read_text(self, text: str, pos: int) -> int:
        """Consumes text up to and including a trigger; returns where reading stops."""
        buffer = self._pending + text[pos:]
        trigger = self._text_trigger
        if (at := buffer.find(trigger)) >= 0:
            self._pending = ""
            self._show(buffer[:at].rstrip())
            self._start_block()
            # What follows the trigger in `text`: the buffer is pending + text[pos:].
            return len(text) - (len(buffer) - at - len(trigger))
        keep = self._possible_trigger_start(buffer)
        body = buffer[:keep]
        stripped = body.rstrip()
        self._show(stripped)
        self._pending = body[len(stripped) :] + buffer[keep:]
        return len(text)

    def _possible_trigger_start(self, buffer: str) -> int:
        """Where the longest suffix of `buffer` that could begin the trigger starts."""
        trigger = self._text_trigger
        for k in range(min(len(trigger) - 1, len(buffer)), 0, -1):
            if trigger.startswith(buffer[-k:]):
                return len(buffer) - k
        return len(buffer)

    def _show(self, text: str) -> None:
        if text:
            # Whitespace held before this text belongs to it.
            self._text.append(text)

    def _start_block(self) -> None:
        self._pending = ""
        self._literal(self._syntax.block_open + CALL_OPEN, _NAME)

    # -- calls -------------------------------------------------------------------------

    def _literal(self, expect: str, then: int) -> None:
        self._state, self._expect, self._then = _LITERAL, expect, then
        if not expect:
            self._state = then

    def _read_call_char(self, ch: str) -> None:
        state = self._state
        if state == _LITERAL:
            # Whitespace may differ from the literal: a detokenizer drops the word-boundary
            # space of a sequence's first token (Mistral's " [" right after [TOOL_CALLS]).
            expect = self._expect.lstrip() if ch != self._expect[0] else self._expect
            if expect and ch == expect[0]:
                self._expect = expect[1:]
                if not self._expect:
                    self._state = self._then
            elif not ch.isspace():
                self._leave_syntax(ch)
        elif state == _NAME:
            if ch == '"':
                self._begin_call()
                self._literal(CALL_NAME_END[1:], _ARGUMENTS)
            else:
                self._name += ch
        elif state == _ARGUMENTS:
            self._read_argument_char(ch)
        elif state == _AFTER_CALL:
            separator = self._syntax.call_separator or ""
            if separator and ch == separator[0]:
                self._literal(separator[1:] + CALL_OPEN, _NAME)
            elif ch == self._syntax.block_close[:1]:
                self._literal(self._syntax.block_close[1:], _TEXT)
            elif not ch.isspace():
                self._leave_syntax(ch)

    def _read_argument_char(self, ch: str) -> None:
        if self._depth == 0 and ch.isspace():
            return  # before the object
        self._argument(ch)
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif ch == "\\":
                self._escaped = True
            elif ch == '"':
                self._in_string = False
        elif ch == '"':
            self._in_string = True
        elif ch in "{[":
            self._depth += 1
        elif ch in "}]":
            self._depth -= 1
            if self._depth == 0:
                self._end_call()

    def _begin_call(self) -> None:
        self._deltas.append(
            pb.ToolCallDelta(index=self.calls, id=self._new_id(), name=self._name, arguments="")
        )
        self.calls += 1
        self._name = ""

    def _argument(self, fragment: str) -> None:
        last = self._deltas[-1] if self._deltas else None
        if last is not None and last.index == self.calls - 1 and not last.id:
            last.arguments += fragment
        else:
            self._deltas.append(pb.ToolCallDelta(index=self.calls - 1, arguments=fragment))

    def _end_call(self) -> None:
        if self._syntax.call_separator is None:
            self._literal(CALL_CLOSE + self._syntax.block_close, _TEXT)
        else:
            self._literal(CALL_CLOSE, _AFTER_CALL)

    def _leave_syntax(self, ch: str) -> None:
        self._state = _TEXT
        self._text.append(ch)

    def _take(self) -> tuple[str, list[pb.ToolCallDelta]]:
        text, deltas = "".join(self._text), self._deltas
        self._text, self._deltas = [], []
        return text, deltas
