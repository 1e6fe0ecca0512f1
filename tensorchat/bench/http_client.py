"""One chat completion over raw httpx, timed per SSE event (no OpenAI SDK in the hot path)."""

from __future__ import annotations

import json
import time
from types import TracebackType
from typing import Any

import httpx

from tensorchat.bench.sse import SSEParser
from tensorchat.bench.stats import RequestResult
from tensorchat.bench.target import Target
from tensorchat.bench.workload import RequestSpec

_DONE = b"[DONE]"


class HttpSender:
    """Sends `RequestSpec`s to an OpenAI-compatible `/chat/completions` over one httpx pool."""

    def __init__(self, target: Target, concurrency: int | None) -> None:
        self._target = target
        self._url = target.chat_url
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.AsyncClient(
            headers=headers,
            limits=limits,
            timeout=httpx.Timeout(target.timeout_s, connect=min(30.0, target.timeout_s)),
        )

    async def __aenter__(self) -> HttpSender:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    def body(self, spec: RequestSpec) -> bytes:
        target = self._target
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

    async def send(self, spec: RequestSpec) -> RequestResult:
        content = self.body(spec)
        result = RequestResult(start=time.monotonic())
        try:
            if self._target.stream:
                await self._stream(content, result)
            else:
                await self._unary(content, result)
        except httpx.HTTPError as exc:
            result.ok, result.error = False, type(exc).__name__
        except ValueError as exc:  # a body that is not the JSON it should be
            result.ok, result.error = False, f"bad_response:{type(exc).__name__}"
        result.end = time.monotonic()
        return result

    async def _stream(self, content: bytes, result: RequestResult) -> None:
        async with self._client.stream("POST", self._url, content=content) as response:
            if response.status_code != 200:
                await response.aread()
                result.error = f"http_{response.status_code}"
                return
            # aiter_raw skips httpx's decoder chain; SSE is never compressed in practice,
            # but honour a server that does compress.
            encoded = response.headers.get("content-encoding", "identity") != "identity"
            chunks = response.aiter_bytes() if encoded else response.aiter_raw()
            parser = SSEParser()
            done = False
            times, sizes = result.chunk_times, result.chunk_sizes
            async for chunk in chunks:
                now = time.monotonic()
                for data in parser.feed(chunk):
                    if data == _DONE:
                        done = True
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
                            times.append(now)
                            sizes.append(len(text))
                        if choice.get("finish_reason"):
                            result.finish_reason = choice["finish_reason"]
                    usage = event.get("usage")
                    if usage:
                        result.output_tokens = int(usage.get("completion_tokens") or 0)
                        result.prompt_tokens = usage.get("prompt_tokens")
        if result.error is None and not done:
            result.error = "incomplete"
        if result.error is None:
            result.ok = True
            if result.output_tokens == 0:
                # No usage chunk: count one token per output event.
                result.output_tokens = len(times)

    async def _unary(self, content: bytes, result: RequestResult) -> None:
        response = await self._client.post(self._url, content=content)
        if response.status_code != 200:
            result.error = f"http_{response.status_code}"
            return
        payload = response.json()
        choices = payload.get("choices") or []
        if choices:
            result.finish_reason = choices[0].get("finish_reason")
        usage = payload.get("usage") or {}
        result.output_tokens = int(usage.get("completion_tokens") or 0)
        result.prompt_tokens = usage.get("prompt_tokens")
        result.ok = True
