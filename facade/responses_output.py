"""Generate responses -> the Responses API's `response` object, whole or as typed SSE events.

One `OutputAssembler` turns the generation's messages into output items (a `message` with
one `output_text` part while the model writes text, a `function_call` per call) and, when
streaming, into the events that build them, in OpenAI's order:

    response.created, response.in_progress,
    response.output_item.added (message), response.content_part.added,
    response.output_text.delta..., response.output_text.done, response.content_part.done,
    response.output_item.done,
    response.output_item.added (function_call), response.function_call_arguments.delta...,
    response.function_call_arguments.done, response.output_item.done, ...,
    response.completed (or response.incomplete when max_output_tokens cut it short)

Each event is `event: <type>` and `data: <json>` with that `type` and a `sequence_number`
counting from 0; there is no `[DONE]` (OpenAI sends none on this route). An error after the
200 went out is an `error` event followed by `response.failed`.

The response is `incomplete` with `incomplete_details.reason` "max_output_tokens" when the
generation ended for length (max_output_tokens, the context, or the server's time limit:
the chat route's `length`, facade/translate.py). Responses have one choice (no `n`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel

from facade.errors import APIError
from facade.ids import random_hex
from facade.response_store import ResponseStore, StoredResponse, StoreUnavailable
from facade.responses_schemas import ResponseObject, ResponsesRequest
from facade.tool_output import CallAssembler
from facade.translate import UsageCounter, finish_reason
from tensorchat.v1 import inference_pb2 as pb

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]


def _item_id(prefix: str) -> str:
    return f"{prefix}_{random_hex()}"


def usage_json(usage: UsageCounter) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


class ResponseFrame:
    """What every snapshot of one response repeats: its id and the request's settings."""

    def __init__(self, req: ResponsesRequest, response_id: str, created: int) -> None:
        self.id = response_id
        text_format = req.format.model_dump(by_alias=True, exclude_none=True)
        choice = req.tool_choice
        self._fields: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": created,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "model": req.model,
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": req.previous_response_id,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "text": {"format": text_format},
            "tool_choice": (
                "auto"
                if choice is None
                else choice
                if isinstance(choice, str)
                else choice.model_dump()
            ),
            "tools": [tool.model_dump() for tool in req.tools or []],
            "truncation": "disabled",
            "user": req.user,
            "metadata": req.metadata or {},
        }
        self.store = False

    def snapshot(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: UsageCounter | None = None,
        error: APIError | None = None,
    ) -> dict[str, Any]:
        return {
            **self._fields,
            "status": status,
            "error": None
            if error is None
            else {"code": _error_code(error), "message": error.message},
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "output": output,
            "usage": None if usage is None else usage_json(usage),
            "store": self.store,
        }


def _error_code(error: APIError) -> str:
    # `response.error.code` takes OpenAI's few values; a refusal of the input is "invalid_prompt".
    if error.status == 429:
        return "rate_limit_exceeded"
    return "invalid_prompt" if 400 <= error.status < 500 else "server_error"


class OutputAssembler:
    """The output items of one generation, built message by message; with `emit`, also the
    stream events (type, payload without sequence_number) that build them."""

    def __init__(self, emit: bool) -> None:
        self.items: list[dict[str, Any]] = []
        self.usage = UsageCounter()
        self.finish: str | None = None
        self._emit = emit
        self._events: list[Event] = []
        self._text: list[str] | None = None  # the open message's text pieces
        self._calls = CallAssembler()
        self._open_calls: dict[int, int] = {}  # call index -> output index

    @property
    def status(self) -> str:
        return "incomplete" if self.finish == "length" else "completed"

    def add(self, message: pb.GenerateResponse) -> list[Event]:
        """The events for one message of the generation."""
        self._events = []
        if message.HasField("finished"):
            self.finish = finish_reason(message.finished.reason, False)
            self.usage.add(message.finished.usage)
            self._close_items()
        else:
            delta = message.delta
            if delta.text:
                self._add_text(delta.text)
            if delta.tool_calls:
                self._close_message()
                for piece in delta.tool_calls:
                    self._add_call_piece(piece)
        return self._events

    def close(self) -> list[Event]:
        """Ends the open items (idempotent); the events that end them."""
        self._events = []
        self._close_items()
        return self._events

    def _close_items(self) -> None:
        self._close_message()
        self._close_calls()

    def _event(self, kind: str, payload: dict[str, Any]) -> None:
        if self._emit:
            self._events.append((kind, payload))

    def _add_text(self, text: str) -> None:
        if self._text is None:
            self._close_calls()
            self._text = []
            item = {"type": "message", "id": _item_id("msg"), "role": "assistant",
                    "status": "in_progress", "content": []}  # fmt: skip
            self.items.append(item)
            self._event(
                "response.output_item.added",
                {"output_index": len(self.items) - 1, "item": dict(item, content=[])},
            )
            self._event("response.content_part.added", {**self._where(), "part": _text_part("")})
        self._text.append(text)
        self._event("response.output_text.delta", {**self._where(), "delta": text, "logprobs": []})

    def _where(self) -> dict[str, Any]:
        index = len(self.items) - 1
        return {"item_id": self.items[index]["id"], "output_index": index, "content_index": 0}

    def _close_message(self) -> None:
        if self._text is None:
            return
        text, self._text = "".join(self._text), None
        item = self.items[-1]
        item["content"] = [_text_part(text)]
        item["status"] = self.status
        where = self._where()
        self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
        self._event("response.content_part.done", {**where, "part": _text_part(text)})
        self._event(
            "response.output_item.done", {"output_index": where["output_index"], "item": item}
        )

    def _add_call_piece(self, piece: pb.ToolCallDelta) -> None:
        self._calls.add([piece])
        at = self._open_calls.get(piece.index)
        if at is None:
            at = self._open_calls[piece.index] = len(self.items)
            item = {"type": "function_call", "id": _item_id("fc"), "call_id": piece.id,
                    "name": piece.name, "arguments": "", "status": "in_progress"}  # fmt: skip
            self.items.append(item)
            self._event("response.output_item.added", {"output_index": at, "item": dict(item)})
        if piece.arguments:
            payload = {
                "item_id": self.items[at]["id"],
                "output_index": at,
                "delta": piece.arguments,
            }
            self._event("response.function_call_arguments.delta", payload)

    def _close_calls(self) -> None:
        calls = {call.index: call for call in self._calls.calls()}
        for index, at in self._open_calls.items():
            item = self.items[at]
            item["arguments"] = calls[index].text
            item["status"] = self.status
            payload = {"item_id": item["id"], "output_index": at, "arguments": item["arguments"]}
            self._event("response.function_call_arguments.done", payload)
            self._event("response.output_item.done", {"output_index": at, "item": item})
        self._open_calls = {}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class ResponseBuilder:
    """Collects a non-streaming request's messages into one `response` object."""

    def __init__(self, shape: ResponsesShape) -> None:
        self._shape = shape
        self._output = OutputAssembler(emit=False)
        self.usage = self._output.usage

    def add(self, message: pb.GenerateResponse) -> None:
        self._output.add(message)

    def to_json(
        self, completion_id: str, created: int, model: str, fingerprint: str
    ) -> dict[str, Any]:
        frame = self._shape.frame(completion_id, created)
        self._output.close()
        reply = frame.snapshot(self._output.status, self._output.items, self.usage)
        self._shape.reply = reply
        return reply


class ResponseEventEncoder:
    """`event:`/`data:` SSE events for one streaming request, numbered in order."""

    def __init__(self, shape: ResponsesShape, frame: ResponseFrame) -> None:
        self._shape = shape
        self._frame = frame
        self._output = OutputAssembler(emit=True)
        self._sequence = 0

    def _encode(self, events: list[Event]) -> bytes:
        out = []
        for kind, payload in events:
            data = json.dumps(
                {"type": kind, "sequence_number": self._sequence, **payload},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            self._sequence += 1
            out.append(f"event: {kind}\ndata: {data}\n\n")
        return "".join(out).encode()

    def start(self) -> bytes:
        snapshot = self._frame.snapshot("in_progress", [])
        return self._encode(
            [
                ("response.created", {"response": snapshot}),
                ("response.in_progress", {"response": snapshot}),
            ]
        )

    def response(self, message: pb.GenerateResponse) -> bytes:
        return self._encode(self._output.add(message))

    def end(self, usage: UsageCounter) -> bytes:
        events = self._output.close()
        status = self._output.status
        reply = self._frame.snapshot(status, self._output.items, usage)
        self._shape.reply = reply
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return self._encode([*events, (kind, {"response": reply})])

    def error(self, error: APIError) -> bytes:
        failed = self._frame.snapshot("failed", self._output.items, error=error)
        detail = {"code": error.code, "message": error.message, "param": error.param}
        return self._encode([("error", detail), ("response.failed", {"response": failed})])


class ResponsesShape:
    """`response` replies and typed events (facade/shapes.py), and storing the response."""

    kind = "response"
    reply_model: type[BaseModel] = ResponseObject

    def __init__(
        self,
        req: ResponsesRequest,
        *,
        store: ResponseStore | None,
        owner: str,
        history: list[dict[str, Any]],
    ) -> None:
        """`store`: where to keep the response (None: not kept)."""
        self._req = req
        self._store = store
        self._owner = owner
        self._history = history
        self.reply: dict[str, Any] | None = None  # the whole response, once it ended

    def frame(self, response_id: str, created: int) -> ResponseFrame:
        frame = ResponseFrame(self._req, response_id, created)
        frame.store = self._store is not None
        return frame

    def builder(self) -> ResponseBuilder:
        return ResponseBuilder(self)

    def encoder(
        self, completion_id: str, created: int, model: str, fingerprint: str
    ) -> ResponseEventEncoder:
        return ResponseEventEncoder(self, self.frame(completion_id, created))

    async def keep(self) -> None:
        """Stores the ended response (before its end goes out, so that a client may continue
        it at once). A failure is the request's when it asked for `store` itself; when it
        only got the default, the response goes out unstored and the outage is logged."""
        if self._store is None or self.reply is None:
            return
        conversation = [
            *self._history,
            *(item.model_dump(mode="json", by_alias=True) for item in self._req.items),
            *self.reply["output"],
        ]
        stored = StoredResponse(self._owner, self.reply, conversation)
        try:
            await self._store.save(self.reply["id"], stored)
        except StoreUnavailable as error:
            if self._req.store:
                raise APIError(503, f"The response could not be stored: {error}") from None
            log.warning("response %s not stored: %s", self.reply["id"], error)
