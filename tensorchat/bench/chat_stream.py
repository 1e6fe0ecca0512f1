"""The OpenAI chat-completions wire format, client side: request bodies and response readers.

Shared by both HTTP clients (httpx and the raw asyncio one), so they measure the same thing.
"""

from __future__ import annotations

import json
from typing import Any

from tensorchat.bench.sse import SSEParser
from tensorchat.bench.stats import RequestResult
from tensorchat.bench.target import Target
from tensorchat.bench.workload import RequestSpec

_DONE = b"[DONE]"


def request_body(target: Target, spec: RequestSpec) -> bytes:
    body: dict[str, Any] = {
        "model": target.model,
        "messages": spec.messages_json(),
        "max_tokens": spec.max_tokens,
        "stream": target.stream,
    }
    if target.stream:
        body["stream_options"] = {"include_usage": True}
    if target.ignore_eos:
        body["ignore_eos"] = True
    if target.temperature is not None:
        body["temperature"] = target.temperature
    body.update(target.extra_body)
    return json.dumps(body).encode()


class StreamRecorder:
    """Records an SSE chat-completion stream into a RequestResult as bytes arrive."""

    __slots__ = ("_parser", "done", "result")

    def __init__(self, result: RequestResult) -> None:
        self.result = result
        self._parser = SSEParser()
        self.done = False

    def feed(self, chunk: bytes, now: float) -> None:
        """Body bytes received at `now` (time.monotonic())."""
        result = self.result
        for data in self._parser.feed(chunk):
            if data == _DONE:
                self.done = True
                continue
            event = json.loads(data)
            if "error" in event:
                result.error = "stream_error"
                continue
            choices = event.get("choices")
            if choices:
                choice = choices[0]
                delta = choice.get("delta") or {}
                text = delta.get("content") or delta.get("reasoning_content") or ""
                if text or delta.get("tool_calls"):
                    if result.ttft is None:
                        result.ttft = now - result.start
                    result.chunk_times.append(now)
                    result.chunk_sizes.append(len(text))
                if choice.get("finish_reason"):
                    result.finish_reason = choice["finish_reason"]
            usage = event.get("usage")
            if usage:
                result.output_tokens = int(usage.get("completion_tokens") or 0)
                result.prompt_tokens = usage.get("prompt_tokens")

    def finish(self) -> None:
        """The body ended: decide ok / incomplete."""
        result = self.result
        if result.error is None and not self.done:
            result.error = "incomplete"
        if result.error is None:
            result.ok = True
            if result.output_tokens == 0:
                # No usage chunk: count one token per output event.
                result.output_tokens = len(result.chunk_times)


def read_completion(payload: Any, result: RequestResult) -> None:
    """A non-streamed chat completion body."""
    if not isinstance(payload, dict):
        raise ValueError("the completion is not a JSON object")
    choices = payload.get("choices") or []
    if choices:
        result.finish_reason = choices[0].get("finish_reason")
    usage = payload.get("usage") or {}
    result.output_tokens = int(usage.get("completion_tokens") or 0)
    result.prompt_tokens = usage.get("prompt_tokens")
    result.ok = True
