"""The shape a reply takes: how the run (facade/generation_run.py) turns a generation's messages
into a whole JSON reply or SSE chunks. Chat completions and text completions differ only here.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel

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
    """Turns each message into SSE chunk bytes, and the usage into the last chunk."""

    def response(self, message: pb.GenerateResponse) -> bytes: ...

    def usage(self, usage: UsageCounter) -> bytes: ...


class ResponseShape(Protocol):
    # The documented reply, which a whole reply is validated against before it goes out.
    reply_model: type[BaseModel]

    def builder(self) -> ReplyBuilder: ...

    def encoder(
        self, completion_id: str, created: int, model: str, fingerprint: str
    ) -> StreamEncoder: ...


class ChatShape:
    """`chat.completion` replies and `chat.completion.chunk` chunks."""

    reply_model: type[BaseModel] = ChatCompletion

    def __init__(self, req: ChatCompletionRequest) -> None:
        self._req = req

    def builder(self) -> ReplyBuilder:
        req = self._req
        return CompletionBuilder(req.n, bool(req.logprobs), req.legacy_functions)

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
