"""The shape a reply takes: how the run (facade/generation_run.py) turns a generation's messages
into a whole JSON reply or SSE events. Chat completions, text completions
(facade/completions.py) and the Responses API (facade/responses_output.py) differ only here.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel

from facade.errors import APIError
from facade.schemas import ChatCompletion, ChatCompletionRequest
from facade.translate import ChunkEncoder, CompletionBuilder, UsageCounter
from tensorchat.v1 import inference_pb2 as pb


class ReplyBuilder(Protocol):
    """Collects every message, then gives the whole reply."""

    usage: UsageCounter

    def add(self, response: pb.GenerateResponse) -> None: ...

    def to_json(
        self, completion_id: str, created: int, model: str, fingerprint: str
    ) -> dict[str, Any]: ...


class StreamEncoder(Protocol):
    """The bytes of an SSE stream: what opens it, each message's events, and its end or the
    error that ends it."""

    def start(self) -> bytes: ...

    def response(self, message: pb.GenerateResponse) -> bytes: ...

    def end(self, usage: UsageCounter) -> bytes: ...

    def error(self, error: APIError) -> bytes: ...


class ResponseShape(Protocol):
    # The documented reply, which a whole reply is validated against before it goes out.
    reply_model: type[BaseModel]

    def builder(self) -> ReplyBuilder: ...

    def encoder(
        self, completion_id: str, created: int, model: str, fingerprint: str
    ) -> StreamEncoder: ...

    async def keep(self) -> None:
        """Called once the whole reply was built (`to_json`, or the stream's `end`), before
        its end goes out: the Responses API stores the response here. Raises the APIError
        that replaces the end."""


class ChatShape:
    """`chat.completion` replies and `chat.completion.chunk` chunks."""

    reply_model: type[BaseModel] = ChatCompletion

    def __init__(self, req: ChatCompletionRequest) -> None:
        self._req = req

    def builder(self) -> ReplyBuilder:
        req = self._req
        return CompletionBuilder(req.n, bool(req.logprobs), req.legacy_functions)

    async def keep(self) -> None:
        return None  # chat completions are not stored

    def encoder(
        self, completion_id: str, created: int, model: str, fingerprint: str
    ) -> StreamEncoder:
        req = self._req
        return ChunkEncoder(
            completion_id,
            created,
            model,
            fingerprint,
            req.include_usage,
            n=req.n,
            want_logprobs=bool(req.logprobs),
            legacy_functions=req.legacy_functions,
        )
