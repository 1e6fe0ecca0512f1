"""Tool calls out: the service's ToolCallDelta pieces -> OpenAI's `tool_calls`, whole in a
completion's message and piece by piece in stream chunks, or the legacy `function_call` when
the request used `functions`.

The pieces are already parsed by the service (the call marker and the JSON around the
arguments never reach the facade): the first piece of call `index` carries its id and name,
later pieces further argument text. OpenAI's chunks have the same shape, so each piece maps
to one `tool_calls` entry: the first with `id`, `type` and `function.name` (and the
arguments "" the service sends with it), later ones only `function.arguments`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tensorchat.v1 import inference_pb2 as pb


@dataclass(slots=True)
class AssembledCall:
    index: int  # the call's position among the choice's calls
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The arguments' JSON text."""
        return "".join(self.arguments)


class CallAssembler:
    """One choice's calls, assembled from their pieces for a non-streaming reply."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, AssembledCall] = {}

    def add(self, pieces: Sequence[pb.ToolCallDelta]) -> None:
        for piece in pieces:
            call = self._calls.get(piece.index)
            if call is None:
                call = self._calls[piece.index] = AssembledCall(piece.index, piece.id, piece.name)
            call.arguments.append(piece.arguments)

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[AssembledCall]:
        """The calls in the order the model made them."""
        return [self._calls[index] for index in sorted(self._calls)]

    def message_fields(self, legacy: bool) -> dict[str, Any]:
        """The assistant message's `tool_calls` (or legacy `function_call`); {} if no calls."""
        calls = self.calls()
        if not calls:
            return {}
        if legacy:
            # `functions` requests ask for one call (Tools.parallel_tool_calls false).
            first = calls[0]
            return {"function_call": {"name": first.name, "arguments": first.text}}
        return {
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.text},
                }
                for call in calls
            ]
        }


def delta_fields(pieces: Sequence[pb.ToolCallDelta], legacy: bool) -> bytes:
    """The chunk delta's `"tool_calls":[...]` (or legacy `"function_call":{...}`) for pieces."""
    if legacy:
        # One call: its pieces in this delta merge into one `function_call` fragment.
        function: dict[str, str] = {}
        name = next((piece.name for piece in pieces if piece.name), "")
        if name:
            function["name"] = name
        function["arguments"] = "".join(piece.arguments for piece in pieces)
        return b'"function_call":' + _dumps(function)
    entries: list[dict[str, Any]] = []
    for piece in pieces:
        if piece.id:
            entries.append(
                {
                    "index": piece.index,
                    "id": piece.id,
                    "type": "function",
                    "function": {"name": piece.name, "arguments": piece.arguments},
                }
            )
        else:
            entries.append({"index": piece.index, "function": {"arguments": piece.arguments}})
    return b'"tool_calls":' + _dumps(entries)


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
