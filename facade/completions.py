"""Generate responses -> OpenAI's legacy text completions (`text_completion`), whole or streamed.

A text completions request may carry several prompts; the run (facade/generation_run.py) reads their
generations one after the other with the choices already numbered as OpenAI numbers them,
`prompt_index * n + i`, so everything here sees one request with `prompts * n` choices.

Legacy logprobs are four parallel lists per choice: `tokens`, `token_logprobs`, `top_logprobs`
(a dict token -> logprob per position) and `text_offset` (where each token starts in the
choice's text). With `echo` the prompt comes first: its first token has no logprob (null in
both lists, as OpenAI and vLLM show it), and generated tokens' offsets continue after the
prompt's text. Offsets count the token strings, as vLLM does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from facade.schemas import Completion, CompletionRequest
from facade.translate import (
    ChoicesBuilder,
    ChunkFrame,
    DataStream,
    finish_reason,
    logprob_value,
)
from tensorchat.v1 import inference_pb2 as pb

_encode_str = json.encoder.encode_basestring  # type: ignore[attr-defined]


@dataclass(slots=True)
class LegacyLogprobs:
    """One choice's legacy logprobs, built up delta by delta."""

    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)
    offset: int = 0  # where the next token starts

    def add_prompt(self, prompt: pb.PromptEcho) -> None:
        for position, lp in enumerate(prompt.logprobs):
            self._add(lp, scored=position > 0)
        # Generated tokens follow the echoed text, whatever its tokens' strings add up to.
        self.offset = len(prompt.text)

    def add(self, items: Any) -> None:
        for lp in items:
            self._add(lp, scored=True)

    def _add(self, lp: pb.TokenLogprob, *, scored: bool) -> None:
        self.tokens.append(lp.token)
        self.token_logprobs.append(logprob_value(lp.logprob) if scored else None)
        self.top_logprobs.append(
            {top.token: logprob_value(top.logprob) for top in lp.top_logprobs} if scored else None
        )
        self.text_offset.append(self.offset)
        self.offset += len(lp.token)

    def take(self) -> dict[str, Any]:
        """What was added since the last take, as the JSON object (streaming sends pieces)."""
        piece = {
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs,
            "text_offset": self.text_offset,
        }
        self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset = [], [], [], []
        return piece


def _delta_text(delta: pb.Delta) -> str:
    return delta.prompt.text + delta.text if delta.HasField("prompt") else delta.text


def _add_logprobs(logprobs: LegacyLogprobs, delta: pb.Delta) -> None:
    if delta.HasField("prompt"):
        logprobs.add_prompt(delta.prompt)
    logprobs.add(delta.logprobs)


class TextCompletionBuilder(ChoicesBuilder):
    """A `text_completion` object: each choice's text (the echoed prompt first) and legacy
    logprobs."""

    object_name = "text_completion"

    def __init__(self, choices: int, per_prompt: int, want_logprobs: bool) -> None:
        super().__init__(choices, per_prompt)
        self._texts: list[list[str]] = [[] for _ in range(choices)]
        self._logprobs = [LegacyLogprobs() for _ in range(choices)] if want_logprobs else None

    def _add_delta(self, index: int, delta: pb.Delta) -> None:
        self._texts[index].append(_delta_text(delta))
        if self._logprobs is not None:
            _add_logprobs(self._logprobs[index], delta)

    def _choice(self, index: int, reason: str) -> dict[str, Any]:
        return {
            "index": index,
            "text": "".join(self._texts[index]),
            "logprobs": self._logprobs[index].take() if self._logprobs is not None else None,
            "finish_reason": reason,
        }


class TextChunkEncoder(DataStream):
    """`data: {...}\\n\\n` text_completion chunks: one per delta, then one with the finish
    reason (text ""), and with include_usage a last one with `choices: []` and the usage."""

    __slots__ = ("_logprobs",)

    def __init__(
        self,
        completion_id: str,
        created: int,
        model: str,
        fingerprint: str,
        include_usage: bool,
        *,
        choices: int,
        want_logprobs: bool,
    ) -> None:
        self._frame = ChunkFrame(
            "text_completion", completion_id, created, model, fingerprint, include_usage
        )
        self._logprobs = [LegacyLogprobs() for _ in range(choices)] if want_logprobs else None

    def response(self, message: pb.GenerateResponse) -> bytes:
        """The chunk for one message of the generation (b"" when it has nothing to send)."""
        index = message.index
        if message.HasField("finished"):
            reason = finish_reason(message.finished.reason, False)
            return self._chunk(index, "", b"null", b'"%s"' % reason.encode())
        delta = message.delta
        text = _delta_text(delta)
        if not text and not delta.logprobs:
            return b""
        logprobs = b"null"
        if self._logprobs is not None:
            _add_logprobs(self._logprobs[index], delta)
            logprobs = json.dumps(self._logprobs[index].take(), ensure_ascii=False).encode()
        return self._chunk(index, text, logprobs, b"null")

    def _chunk(self, index: int, text: str, logprobs: bytes, reason: bytes) -> bytes:
        return b'%s%d,"text":%s,"logprobs":%s,"finish_reason":%s}%s' % (
            self._frame.head,
            index,
            _encode_str(text).encode(),
            logprobs,
            reason,
            self._frame.close,
        )


class CompletionShape:
    """`text_completion` replies and chunks (facade/shapes.py)."""

    reply_model: type[BaseModel] = Completion

    def __init__(self, req: CompletionRequest) -> None:
        self._req = req
        self._choices = req.n * len(req.prompts)

    def builder(self) -> TextCompletionBuilder:
        return TextCompletionBuilder(self._choices, self._req.n, self._req.logprobs is not None)

    async def keep(self) -> None:
        return None  # text completions are not stored

    def encoder(
        self, completion_id: str, created: int, model: str, fingerprint: str
    ) -> TextChunkEncoder:
        return TextChunkEncoder(
            completion_id,
            created,
            model,
            fingerprint,
            self._req.include_usage,
            choices=self._choices,
            want_logprobs=self._req.logprobs is not None,
        )
